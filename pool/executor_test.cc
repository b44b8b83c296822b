#include "pool/executor.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/value.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

int Square(int x) { return x * x; }
int SleepMs(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}
int Throws(int) { throw std::runtime_error("executor task failed"); }
int KillSelf(int) {
  ::raise(SIGKILL);
  return 0;
}
int Pid(int) { return ::getpid(); }
int ThrowsOnOdd(int x) {
  if (x % 2) throw std::runtime_error("odd item");
  return x;
}

// Worker globals, set by an initializer: a shared record of the tasks running at once, and a
// descriptor to report signals on.
Array<int32_t> g_shared;  // [0] running now, [1] most at once, [2] tasks started
int g_report_fd = -1;
int32_t g_init_value = 0;
void InitWorker(Array<int32_t> shared, int32_t value) {
  g_shared = std::move(shared);
  g_init_value = value;
}
int ReadInitValue(int) { return g_init_value; }
// Counts itself running (and the most ever running at once), sleeps, then leaves.
int Counted(int ms) {
  std::atomic_ref<int32_t> running(g_shared[0]);
  std::atomic_ref<int32_t> most(g_shared[1]);
  std::atomic_ref<int32_t>(g_shared[2]).fetch_add(1);
  int32_t now = running.fetch_add(1) + 1;
  int32_t seen = most.load();
  while (now > seen && !most.compare_exchange_weak(seen, now)) {
  }
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  running.fetch_sub(1);
  return ms;
}
void OnSigterm(int) { (void)!::write(g_report_fd, "T", 1); }
void InitSignalReport(UniqueFd report, Array<int32_t> shared) {
  g_report_fd = report.Release();
  g_shared = std::move(shared);
}
// Catches SIGTERM (reporting it), says it started, then sleeps until killed.
int CatchTermAndWait(int) {
  ::signal(SIGTERM, OnSigterm);
  std::atomic_ref<int32_t>(g_shared[2]).fetch_add(1);
  for (;;) ::pause();
}

class ExecutorTest : public ::testing::Test {
 protected:
  void TearDown() override { ShutdownForkServer(); }
  std::unique_ptr<ProcessPoolExecutor> Make(int workers = 2) {
    ExecutorOptions o;
    o.max_workers = workers;
    auto ex = ProcessPoolExecutor::Create(o);
    EXPECT_TRUE(ex.ok()) << ex.status();
    return ex.ok() ? *std::move(ex) : nullptr;
  }
};

// 32 workers on this 2-CPU machine: every future completes, the workers all took part, and
// shutdown leaves nothing behind.
TEST_F(ExecutorTest, ThirtyTwoWorkersSubmitMapAndShutDown) {
  auto ex = Make(32);
  ASSERT_NE(ex, nullptr);
  EXPECT_EQ(ex->max_workers(), 32);
  std::vector<Future<int>> fs;
  for (int i = 0; i < 2000; ++i) fs.push_back(ex->Submit(Square, i));
  for (int i = 0; i < 2000; ++i) ASSERT_THAT(fs[i].Result(absl::Seconds(60)), IsOkAndHolds(i * i));
  std::vector<int> in(1000);
  for (int i = 0; i < 1000; ++i) in[i] = i;
  ASSERT_OK_AND_ASSIGN(auto results, ex->Map(Square, in, 8));
  for (int i = 0; i < 1000; ++i) ASSERT_THAT(results[i], IsOkAndHolds(i * i));
  MPROC_ASSERT_OK(ex->Shutdown(/*wait=*/true));
  EXPECT_TRUE(ex->WorkerPids().empty());
}

TEST_F(ExecutorTest, SubmitResultExceptionDone) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  Future<int> f = ex->Submit(Square, 9);
  EXPECT_THAT(f.Result(absl::Seconds(30)), IsOkAndHolds(81));
  EXPECT_TRUE(f.Done());
  MPROC_EXPECT_OK(f.Exception());
  Future<int> bad = ex->Submit(Throws, 1);
  EXPECT_THAT(bad.Exception(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("executor task failed")));
  EXPECT_FALSE(bad.Cancelled());
  Future<int> slow = ex->Submit(SleepMs, 300);
  EXPECT_THAT(slow.Result(absl::Milliseconds(10)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(slow.Exception(absl::Milliseconds(10)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(slow.Result(), IsOkAndHolds(300));
}

TEST_F(ExecutorTest, MapWaitAsCompletedAndCallbacks) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  ASSERT_OK_AND_ASSIGN(auto results, ex->Map(Square, std::vector<int>{1, 2, 3, 4}));
  ASSERT_EQ(results.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_THAT(results[i], IsOkAndHolds((i + 1) * (i + 1)));
  std::vector<Future<int>> fs = {ex->Submit(SleepMs, 400), ex->Submit(SleepMs, 10)};
  auto [done, not_done] = WaitFutures(fs, absl::Seconds(30), ReturnWhen::kFirstCompleted);
  EXPECT_EQ(done, std::vector<size_t>{1});
  EXPECT_EQ(not_done, std::vector<size_t>{0});
  EXPECT_EQ(AsCompleted(fs, absl::Seconds(30)), (std::vector<size_t>{1, 0}));
  std::atomic<int> called{0};
  fs[0].AddDoneCallback([&](const Future<int>& f) { called = *f.Result(); });  // already done
  EXPECT_EQ(called.load(), 400);
}

// Done callbacks as concurrent.futures runs them: every one added before completion runs,
// in order, on the completing thread once Done() is true (so Result returns at once inside
// one); a throwing callback is reported and the others and the pool go on; a future dropped
// by the caller still runs its callbacks, and they are freed after. Before: only the last
// callback added ran, Result inside it blocked for ever, a throw ended the program, and each
// such future leaked.
TEST_F(ExecutorTest, DoneCallbacksRunAfterDoneInOrderAndAThrowGoesNoFurther) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  std::mutex mu;
  std::vector<std::string> seen;
  auto note = [&](std::string s) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(std::move(s));
  };
  auto alive = std::make_shared<int>(0);
  std::weak_ptr<int> watch = alive;
  {
    Future<int> f = ex->Submit(SleepMs, 200);
    f.AddDoneCallback([&, alive](const Future<int>& g) {
      note(absl::StrCat("first done=", g.Done() ? "1" : "0", " result=", *g.Result(absl::Seconds(5))));
    });
    f.AddDoneCallback([](const Future<int>&) { throw std::runtime_error("from a callback"); });
    f.AddDoneCallback([&](const Future<int>& g) {
      note(absl::StrCat("third result=", *g.Result(absl::Seconds(5))));
    });
    alive.reset();
  }  // the caller's copy is gone: the callbacks keep the future until they ran
  for (int i = 0; i < 3000; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (seen.size() == 2) break;
    }
    ::usleep(1000);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(seen, (std::vector<std::string>{"first done=1 result=200", "third result=200"}));
  }
  EXPECT_TRUE(watch.expired()) << "a callback (and what it holds) was kept after it ran";
  // The pool thread survived the throw: the executor serves on.
  EXPECT_THAT(ex->Submit(Square, 7).Result(absl::Seconds(30)), IsOkAndHolds(49));
}

// Shutdown(wait) from a done callback, which runs on the pool thread: it stops the executor
// and says it cannot wait for its own thread, instead of joining itself (which threw and
// ended the program); a Shutdown(wait) from here then waits as usual.
TEST_F(ExecutorTest, ShutdownWithWaitFromADoneCallbackDoesNotJoinItself) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  ProcessPoolExecutor* raw = ex.get();
  std::atomic<int> code{-1};
  Future<int> f = ex->Submit(SleepMs, 50);
  f.AddDoneCallback([&](const Future<int>&) {
    code = static_cast<int>(raw->Shutdown(/*wait=*/true).code());
  });
  ASSERT_THAT(f.Result(absl::Seconds(30)), IsOkAndHolds(50));
  for (int i = 0; i < 3000 && code.load() < 0; ++i) ::usleep(1000);
  EXPECT_EQ(code.load(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ex->Submit(Square, 2).Result(absl::Seconds(5)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  MPROC_EXPECT_OK(ex->Shutdown(/*wait=*/true));
  EXPECT_TRUE(ex->WorkerPids().empty());
}

TEST_F(ExecutorTest, CancelAndShutdownWithCancelFutures) {
  ASSERT_OK_AND_ASSIGN(Array<int32_t> shared, Array<int32_t>::Create(3, LockMode::kNone));
  ExecutorOptions o;
  o.max_workers = 1;
  ASSERT_OK_AND_ASSIGN(auto ex, ProcessPoolExecutor::Create(o, InitWorker, shared, 0));
  // One worker, which holds a window of tasks: queue enough that some are still pending.
  std::vector<Future<int>> fs;
  for (int i = 0; i < 12; ++i) fs.push_back(ex->Submit(Counted, 100));
  // The first task has started: the worker holds its window, the last task is still pending.
  while (std::atomic_ref<int32_t>(shared[2]).load() == 0) ::usleep(200);
  EXPECT_TRUE(fs.back().Cancel());
  EXPECT_TRUE(fs.back().Cancelled());
  EXPECT_THAT(fs.back().Result(), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_FALSE(fs.front().Cancel());  // already with a worker
  MPROC_ASSERT_OK(ex->Shutdown(/*wait=*/true, /*cancel_futures=*/true));
  int ok = 0, cancelled = 0;
  for (auto& f : fs) {
    absl::StatusOr<int> r = f.Result(absl::Seconds(30));
    if (r.ok()) ++ok;
    if (absl::IsCancelled(r.status())) ++cancelled;
  }
  EXPECT_EQ(ok + cancelled, 12);
  EXPECT_GE(ok, 1);
  EXPECT_GE(cancelled, 2);
  EXPECT_THAT(ex->Submit(Square, 1).Result(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(ExecutorTest, AWorkerDeathBreaksThePoolLikeCPython) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  Future<int> slow = ex->Submit(SleepMs, 2000);
  Future<int> killer = ex->Submit(KillSelf, 0);
  EXPECT_THAT(killer.Result(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("BrokenProcessPool")));
  EXPECT_THAT(slow.Result(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("BrokenProcessPool")));
  EXPECT_THAT(ex->Submit(Square, 2).Result(),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("BrokenProcessPool")));
}

// CPython's map keywords: chunksize batches items into one task (the ValueError for 0 is an
// INVALID_ARGUMENT before anything runs), an item's exception fails that item alone, and a
// buffersize of 0 is refused as CPython's.
TEST_F(ExecutorTest, MapHonoursChunksizeAndReportsEachItem) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  std::vector<int> in(10);
  for (int i = 0; i < 10; ++i) in[i] = i;
  ASSERT_OK_AND_ASSIGN(auto pids, ex->Map(Pid, in, /*chunksize=*/10));
  for (auto& p : pids) EXPECT_THAT(p, IsOkAndHolds(*pids[0]));  // one task: one worker
  ASSERT_OK_AND_ASSIGN(auto mixed, ex->Map(ThrowsOnOdd, in, /*chunksize=*/3));
  ASSERT_EQ(mixed.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    if (i % 2) {
      EXPECT_THAT(mixed[i], StatusIs(absl::StatusCode::kAborted, HasSubstr("odd item")));
    } else {
      EXPECT_THAT(mixed[i], IsOkAndHolds(i));
    }
  }
  EXPECT_THAT(ex->Map(Square, in, /*chunksize=*/0).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunksize")));
  ExecutorMapOptions zero;
  zero.buffersize = 0;
  EXPECT_THAT(ex->Map(Square, in, zero).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("buffersize")));
  ASSERT_OK_AND_ASSIGN(auto none, ex->Map(Square, std::vector<int>{}, /*chunksize=*/4));
  EXPECT_TRUE(none.empty());
}

// Map's timeout runs from the call: what is not ready by then is DEADLINE_EXCEEDED, and the
// call returns then, not when the slow items end.
TEST_F(ExecutorTest, MapTimeoutEndsTheCall) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  ExecutorMapOptions o;
  o.timeout = absl::Milliseconds(500);
  const double t0 = testing::NowSeconds();
  ASSERT_OK_AND_ASSIGN(auto r, ex->Map(SleepMs, std::vector<int>{1, 20'000, 20'000, 1, 1}, o));
  EXPECT_LT(testing::NowSeconds() - t0, 10.0);
  ASSERT_EQ(r.size(), 5u);
  EXPECT_THAT(r[0], IsOkAndHolds(1));
  for (int i = 1; i < 5; ++i) EXPECT_THAT(r[i], StatusIs(absl::StatusCode::kDeadlineExceeded));
  MPROC_EXPECT_OK(ex->KillWorkers());
}

// buffersize bounds the chunks in flight: with 1, two workers never run two tasks at once;
// without it, they do. The initializer hands each worker the shared record.
TEST_F(ExecutorTest, MapBuffersizeBoundsTheTasksInFlight) {
  ASSERT_OK_AND_ASSIGN(Array<int32_t> shared, Array<int32_t>::Create(3, LockMode::kNone));
  ExecutorOptions eo;
  eo.max_workers = 2;
  ASSERT_OK_AND_ASSIGN(auto ex, ProcessPoolExecutor::Create(eo, InitWorker, shared, 7));
  ASSERT_OK_AND_ASSIGN(auto init, ex->Map(ReadInitValue, std::vector<int>(4, 0)));
  for (auto& v : init) EXPECT_THAT(v, IsOkAndHolds(7));  // the initializer ran in each worker
  ExecutorMapOptions one;
  one.buffersize = 1;
  ASSERT_OK_AND_ASSIGN(auto r, ex->Map(Counted, std::vector<int>(8, 20), one));
  for (auto& v : r) EXPECT_THAT(v, IsOkAndHolds(20));
  EXPECT_EQ(std::atomic_ref<int32_t>(shared[1]).load(), 1);
  ASSERT_OK_AND_ASSIGN(auto all, ex->Map(Counted, std::vector<int>(8, 50)));
  for (auto& v : all) EXPECT_THAT(v, IsOkAndHolds(50));
  EXPECT_EQ(std::atomic_ref<int32_t>(shared[1]).load(), 2);
}

// KillWorkers is SIGKILL (a worker catching SIGTERM never sees it); TerminateWorkers is
// SIGTERM.
TEST_F(ExecutorTest, KillWorkersSendsSigkillTerminateWorkersSigterm) {
  for (bool kill : {true, false}) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    UniqueFd rd(fds[0]);
    ASSERT_OK_AND_ASSIGN(Array<int32_t> shared, Array<int32_t>::Create(3, LockMode::kNone));
    ExecutorOptions o;
    o.max_workers = 1;
    ASSERT_OK_AND_ASSIGN(auto ex, ProcessPoolExecutor::Create(o, InitSignalReport,
                                                              UniqueFd(fds[1]), shared));
    Future<int> f = ex->Submit(CatchTermAndWait, 0);
    while (std::atomic_ref<int32_t>(shared[2]).load() == 0) ::usleep(200);
    MPROC_ASSERT_OK(kill ? ex->KillWorkers() : ex->TerminateWorkers());
    EXPECT_THAT(f.Result(absl::Seconds(10)), StatusIs(absl::StatusCode::kAborted));
    char c = 0;
    const bool got_sigterm = ::read(rd.get(), &c, 1) == 1 && c == 'T';
    EXPECT_EQ(got_sigterm, !kill) << (kill ? "KillWorkers" : "TerminateWorkers");
  }
}

// A worker that did its max_tasks_per_child tasks retires: it closes its channel and exits,
// and the executor must not take that for an abrupt death (it used to SIGKILL a worker still
// exiting and call the executor broken, mostly under spawn).
class ExecutorRetirementTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
};

TEST_P(ExecutorRetirementTest, RetiringWorkersNeverBreakTheExecutor) {
  for (int round = 0; round < 6; ++round) {
    ExecutorOptions o;
    o.max_workers = 2;
    o.max_tasks_per_child = 2;
    o.start_method = GetParam();
    ASSERT_OK_AND_ASSIGN(auto ex, ProcessPoolExecutor::Create(o));
    std::vector<Future<int>> fs;
    for (int i = 0; i < 30; ++i) fs.push_back(ex->Submit(Square, i));
    for (int i = 0; i < 30; ++i) {
      ASSERT_THAT(fs[i].Result(absl::Seconds(60)), IsOkAndHolds(i * i))
          << "round " << round << ", task " << i;
    }
    MPROC_ASSERT_OK(ex->Shutdown());
  }
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ExecutorRetirementTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

TEST_F(ExecutorTest, TerminateWorkersEndsRunningTasks) {
  ASSERT_OK_AND_ASSIGN(Array<int32_t> shared, Array<int32_t>::Create(3, LockMode::kNone));
  ExecutorOptions o;
  o.max_workers = 2;
  ASSERT_OK_AND_ASSIGN(auto ex, ProcessPoolExecutor::Create(o, InitWorker, shared, 0));
  Future<int> f = ex->Submit(Counted, 60'000);
  while (std::atomic_ref<int32_t>(shared[2]).load() == 0) ::usleep(200);  // it runs
  double t0 = testing::NowSeconds();
  MPROC_ASSERT_OK(ex->TerminateWorkers());
  EXPECT_LT(testing::NowSeconds() - t0, 10.0);
  EXPECT_THAT(f.Result(absl::Seconds(10)), StatusIs(absl::StatusCode::kAborted));
}

// A Future cancels through a link its engine cuts before it is freed (EngineLink in
// pool/internal/task_sink.h). An executor dropped from its own done callback frees itself on
// its own thread, at a moment no Future holder sees, so a Cancel can start while the engine
// lives and reach it after. Here the engine is gone before the Cancel: before the link, the
// Future called the destroyed engine.
class RecordingSink final : public pool_internal::TaskSink {
 public:
  explicit RecordingSink(std::atomic<int>* calls) : calls_(calls) {}
  ~RecordingSink() override { CutLink(); }
  absl::StatusOr<uint64_t> Submit(EncodeBuffer, pool_internal::TaskDone,
                                  std::shared_ptr<void>) override {
    return 7;
  }
  bool Cancel(uint64_t id, pool_internal::CancelledTask*) override {
    calls_->fetch_add(1);
    return id == 7;
  }

 private:
  std::atomic<int>* calls_;
};

TEST(EngineLinkTest, ACancelAfterItsEngineIsFreedReachesNothing) {
  std::atomic<int> calls{0};
  Future<int> kept;
  Future<int> cancelled;
  {
    auto sink = std::make_unique<RecordingSink>(&calls);
    pool_internal::FutureAccess::Bind(kept, sink.get(), 7);
    pool_internal::FutureAccess::Bind(cancelled, sink.get(), 7);
    EXPECT_TRUE(cancelled.Cancel());  // through the link while the engine lives
    EXPECT_TRUE(cancelled.Cancelled());
    EXPECT_EQ(calls.load(), 1);
  }
  EXPECT_FALSE(kept.Cancel());  // the engine is gone: nothing is called
  EXPECT_FALSE(kept.Done());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(cancelled.Cancel());  // a cancelled future still says so
}

// What a Cancel removes (the caller's arguments, the callback) is destroyed after the link's
// lock: its destructors may call back into the engine's link (here: a Submit, as the last
// reference to an executor ending it would Cut). Before, they ran under the lock, and this
// test's deleter found it taken.
class HandingOutSink final : public pool_internal::TaskSink {
 public:
  ~HandingOutSink() override { CutLink(); }
  absl::StatusOr<uint64_t> Submit(EncodeBuffer, pool_internal::TaskDone,
                                  std::shared_ptr<void>) override {
    return 8;
  }
  bool Cancel(uint64_t, pool_internal::CancelledTask* removed) override {
    std::shared_ptr<pool_internal::EngineLink> link = this->link();
    removed->keepalive = std::shared_ptr<void>(nullptr, [this, link](void*) {
      // Re-enters the link: fine only when its lock is no longer held.
      free_after_lock.store(link->Submit(EncodeBuffer(), nullptr, nullptr).ok());
    });
    return true;
  }
  std::atomic<bool> free_after_lock{false};
};

TEST(EngineLinkTest, WhatACancelRemovesIsDestroyedAfterTheLinksLock) {
  HandingOutSink sink;
  Future<int> f;
  pool_internal::FutureAccess::Bind(f, &sink, 7);
  std::thread t([&] { EXPECT_TRUE(f.Cancel()); });
  // Bounded: a deleter run under the lock would deadlock, so give it 10 s and fail.
  for (int i = 0; i < 10'000 && !sink.free_after_lock.load(); ++i) ::usleep(1000);
  EXPECT_TRUE(sink.free_after_lock.load());
  if (!sink.free_after_lock.load()) {
    t.detach();  // stuck on the lock it holds: report, do not hang the suite
    std::abort();
  }
  t.join();
}

// Deletes `sink` on another thread while a call runs through its link (`during` names it): the
// deletion must wait for the call, which `end_call` lets return. One-sided: 100 ms without
// the deletion finishing cannot prove it would never finish early, but cannot fail a correct
// cut.
template <typename Sink, typename EndCall>
void ExpectFreedOnlyAfter(Sink* sink, const char* during, EndCall end_call) {
  std::atomic<bool> freed{false};
  std::thread freer([&] {
    delete sink;
    freed.store(true);
  });
  ::usleep(100'000);
  EXPECT_FALSE(freed.load()) << "the engine was freed while " << during;
  end_call();
  freer.join();
  EXPECT_TRUE(freed.load());
}

// The cut waits for a call under way: an engine whose Cancel is running through the link is
// not freed until that Cancel returns (before, nothing held the engine: it was freed under
// the call).
class BlockingSink final : public pool_internal::TaskSink {
 public:
  ~BlockingSink() override { CutLink(); }
  absl::StatusOr<uint64_t> Submit(EncodeBuffer, pool_internal::TaskDone,
                                  std::shared_ptr<void>) override {
    return 7;
  }
  bool Cancel(uint64_t, pool_internal::CancelledTask*) override {
    inside.store(true);
    while (!release.load()) ::usleep(1000);
    return true;
  }
  std::atomic<bool> inside{false};
  std::atomic<bool> release{false};
};

TEST(EngineLinkTest, AnEngineIsNotFreedWhileACancelRunsThroughItsLink) {
  auto* sink = new BlockingSink;
  Future<int> f;
  pool_internal::FutureAccess::Bind(f, sink, 7);
  std::thread canceller([&] { EXPECT_TRUE(f.Cancel()); });
  while (!sink->inside.load()) ::usleep(1000);
  // Still alive while the cut waits: the release reaches it.
  ExpectFreedOnlyAfter(sink, "a Cancel ran in it", [&] { sink->release.store(true); });
  canceller.join();
  EXPECT_TRUE(f.Cancelled());
}

// A waiter lends its thread to its engine through the link (TaskSink::Drive, as an
// MpiExecutor's Result does); the cut waits for the drive to return, so an engine is not freed
// while a waiter runs its turns, and once cut a wait reaches nothing.
class DrivenSink final : public pool_internal::TaskSink {
 public:
  ~DrivenSink() override { CutLink(); }
  absl::StatusOr<uint64_t> Submit(EncodeBuffer, pool_internal::TaskDone,
                                  std::shared_ptr<void>) override {
    return 7;
  }
  bool Cancel(uint64_t, pool_internal::CancelledTask*) override { return false; }
  void Drive(const std::function<bool()>& ready, const Deadline& deadline) override {
    inside.store(true);
    while (!ready() && !deadline.Expired()) ::usleep(1000);
  }
  std::atomic<bool> inside{false};
};

TEST(EngineLinkTest, AnEngineIsNotFreedWhileAWaiterDrivesIt) {
  auto* sink = new DrivenSink;
  Future<int> f;
  Future<int> later;
  pool_internal::FutureAccess::Bind(f, sink, 7);
  pool_internal::FutureAccess::Bind(later, sink, 8);
  absl::StatusOr<int> got = absl::UnknownError("not yet");
  std::thread waiter([&] { got = f.Result(absl::Seconds(30)); });
  while (!sink->inside.load()) ::usleep(1000);
  // The drive sees the result and returns.
  ExpectFreedOnlyAfter(sink, "a waiter drove it",
                       [&] { pool_internal::FutureAccess::Result(f).Set(42); });
  waiter.join();
  EXPECT_THAT(got, IsOkAndHolds(42));
  // Cut: the wait does not reach the freed engine (asan would say so); it only waits.
  EXPECT_THAT(later.Result(absl::Milliseconds(20)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

}  // namespace
}  // namespace mproc
