#include "pool/executor.h"
#include "pool/pool.h"

#include <signal.h>
#include <unistd.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <random>
#include <functional>
#include <optional>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "base/deadline.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/queue.h"
#include "pool/internal/orphans.h"
#include "pool/internal/sigint.h"
#include "pool/progress.h"
#include "sync/value.h"

namespace mproc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

int Square(int x) { return x * x; }
bool IsEven(int x) { return x % 2 == 0; }
std::string WorkerName(int) { return CurrentProcess().name; }
int32_t WorkerParent(int) {
  std::optional<ParentProcessInfo> p = ParentProcess();
  return p && p->IsAlive() ? p->pid : -1;
}
int Add(int a, int b) { return a + b; }
std::string Greet(std::string name) { return "hello " + name; }
int FailOnSeven(int x) {
  if (x == 7) throw std::invalid_argument("seven is not allowed");
  return x;
}
int FailOnNegative(int x) {
  if (x < 0) throw std::invalid_argument("negative: " + std::to_string(x));
  return x;
}
int32_t MyPid(int) { return static_cast<int32_t>(::getpid()); }
int IsOpen(UniqueFd fd) { return ::fcntl(fd.get(), F_GETFD) >= 0 ? 1 : 0; }
// A result that owns descriptors: a Queue made in the worker, holding `text`.
Queue<std::string> QueueHolding(std::string text) {
  absl::StatusOr<Queue<std::string>> q = Queue<std::string>::Create();
  if (!q.ok() || !q->Put(text).ok()) std::abort();
  return *std::move(q);
}
int SleepMs(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}
// Left alive at exit by a test child; volatile globals, so the stores stay and LeakSanitizer
// sees them reachable.
Pool* volatile g_pool_alive_at_exit = nullptr;
ProcessPoolExecutor* volatile g_executor_alive_at_exit = nullptr;
// Sleeps, then records that it ran to its end.
int SleepThenMark(Array<int32_t> mark, int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  std::atomic_ref<int32_t>(mark[0]).store(1);
  return ms;
}
int ExitAtOnce() { return 0; }
// Waits (bounded) until the test opens the gate (gate[0] set), then returns 300: a task that
// completes only after the test has set up what its completion runs.
int WaitForGate(Array<int32_t> gate) {
  for (int i = 0; i < 30000 && std::atomic_ref<int32_t>(gate[0]).load() == 0; ++i) ::usleep(1000);
  return std::atomic_ref<int32_t>(gate[0]).load() != 0 ? 300 : -1;
}
int KillSelfOn(int x, int victim) {
  if (x == victim) ::raise(SIGKILL);
  return x;
}
void Nothing() {}
int PrintAndReturn(int x) {
  std::printf("task %d\n", x);  // stdout is a file in this test: fully buffered
  return x;
}

int g_init_value = 0;
void SetInit(int v) { g_init_value = v; }
int ReadInit(int) { return g_init_value; }
void ThrowingInit() { throw std::runtime_error("initializer exploded"); }
void KeepArray(Array<int32_t>) {}

// A generator of 0, 1, ..., n - 1 (lazy IMap input).
template <typename T>
std::function<std::optional<T>()> CountUpTo(T n) {
  return [n, next = T{0}]() mutable -> std::optional<T> {
    if (next == n) return std::nullopt;
    return next++;
  };
}

// An executor with one worker under `method` (the exit tests' children).
absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> OneWorkerExecutor(StartMethod method) {
  ExecutorOptions eo;
  eo.max_workers = 1;
  eo.start_method = method;
  return ProcessPoolExecutor::Create(eo);
}

class PoolTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
  Pool::Options Opts(int n = 2) {
    Pool::Options o;
    o.processes = n;
    o.start_method = GetParam();
    return o;
  }
};

// A Pool (or executor) still alive when its process exits does not hang the exit: its idle
// workers were joined at exit, waiting for tasks for ever (a global Pool, a leaked one).
// Now the executor finishes its work first and the Pool is terminated, as CPython's are. A
// Process of another start method started first puts the exit handlers (this file's and the
// fork server's) in the other order: the pools are ended whichever runs first.
TEST_P(PoolTest, APoolOrExecutorAliveAtExitDoesNotHangTheExit) {
  const StartMethod method = GetParam();
  ASSERT_OK_AND_ASSIGN(Array<int32_t> mark, Array<int32_t>::Create(1, LockMode::kNone));
  for (bool other_first : {false, true}) {
    std::atomic_ref<int32_t>(mark[0]).store(0);
    pid_t pid = testing::Child([method, other_first, mark] {
      if (other_first) {
        Process p(ExitAtOnce);
        p.SetStartMethod(method == StartMethod::kSpawn ? StartMethod::kFork : StartMethod::kSpawn);
        if (!p.Start().ok() || !p.Join().ok()) return 5;
      }
      Pool::Options o;
      o.processes = 2;
      o.start_method = method;
      absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Create(o);
      if (!pool.ok() || !(*pool)->Map(Square, std::vector<int>{1, 2, 3}).ok()) return 3;
      g_pool_alive_at_exit = pool->release();
      absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> ex = OneWorkerExecutor(method);
      if (!ex.ok()) return 4;
      static Future<int> pending;
      pending = (*ex)->Submit(SleepThenMark, mark, 100);
      g_executor_alive_at_exit = ex->release();
      std::exit(0);  // runs the exit handlers, as returning from main does
    });
    EXPECT_EQ(testing::Join(pid, 60), 0) << "other start method first: " << other_first;
    EXPECT_EQ(std::atomic_ref<int32_t>(mark[0]).load(), 1)
        << "the executor's task did not run to its end before the exit";
  }
}

// An executor dropped from its own done callback, then the process exits at once: the exit
// waits for the orphaned executor to finish its work and free itself before it joins the
// children (its detached thread is not left running into the exit).
TEST_P(PoolTest, AnExecutorDroppedFromItsCallbackFinishesBeforeTheExit) {
  const StartMethod method = GetParam();
  ASSERT_OK_AND_ASSIGN(Array<int32_t> mark, Array<int32_t>::Create(1, LockMode::kNone));
  pid_t pid = testing::Child([method, mark] {
    absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> ex = OneWorkerExecutor(method);
    if (!ex.ok()) return 4;
    static std::unique_ptr<ProcessPoolExecutor> owner;
    static std::atomic<bool> dropped{false};
    static Future<int> first;
    static Future<int> second;
    owner = *std::move(ex);
    first = owner->Submit(SleepMs, 200);
    second = owner->Submit(SleepThenMark, mark, 1000);
    first.AddDoneCallback([](const Future<int>&) {
      owner.reset();
      dropped = true;
    });
    while (!dropped.load()) ::usleep(1000);
    std::exit(pool_internal::RunningOrphans() == 1 ? 0 : 6);
  });
  EXPECT_EQ(testing::Join(pid, 60), 0);
  EXPECT_EQ(std::atomic_ref<int32_t>(mark[0]).load(), 1)
      << "the dropped executor's last task did not run to its end before the exit";
}

// The exit hook is finishing an executor's work (as at exit) when a done callback drops the
// executor: the hook, which is joining that thread, frees it afterwards; the exit completes
// with the work done.
TEST_P(PoolTest, AnExecutorDroppedFromItsCallbackWhileTheExitEndsItIsFreedByTheExit) {
  const StartMethod method = GetParam();
  ASSERT_OK_AND_ASSIGN(Array<int32_t> mark, Array<int32_t>::Create(1, LockMode::kNone));
  pid_t pid = testing::Child([method, mark] {
    absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> ex = OneWorkerExecutor(method);
    if (!ex.ok()) return 4;
    // Never destroyed at exit (so the drop happens in the callback); reachable for LSan.
    static auto* owner = new std::unique_ptr<ProcessPoolExecutor>(*std::move(ex));
    static Future<int> first;
    static Future<int> second;
    first = (*owner)->Submit(SleepMs, 300);
    second = (*owner)->Submit(SleepThenMark, mark, 200);
    first.AddDoneCallback([](const Future<int>&) { owner->reset(); });
    std::exit(0);  // the exit hook ends the executor while its first task still runs
  });
  EXPECT_EQ(testing::Join(pid, 60), 0);
  EXPECT_EQ(std::atomic_ref<int32_t>(mark[0]).load(), 1)
      << "the executor's last task did not run to its end before the exit";
}

// Many more workers than CPUs (64 on this 2-CPU machine): they start, each takes part, every
// item comes back in order, and shutdown leaves nothing behind.
TEST_P(PoolTest, SixtyFourWorkersStartMapAndShutDown) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts(64)));
  EXPECT_EQ(pool->processes(), 64);
  EXPECT_EQ(pool->WorkerPids().size(), 64u);
  std::vector<int> in(10'000);
  for (int i = 0; i < 10'000; ++i) in[i] = i;
  ASSERT_OK_AND_ASSIGN(std::vector<int> out, pool->Map(Square, in, /*chunksize=*/1));
  ASSERT_EQ(out.size(), in.size());
  for (int i = 0; i < 10'000; ++i) ASSERT_EQ(out[i], i * i) << i;
  MPROC_ASSERT_OK(pool->Close());
  MPROC_ASSERT_OK(pool->Join());
  EXPECT_TRUE(pool->WorkerPids().empty());
}

TEST_P(PoolTest, MapApplyStarMapKeepOrder) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  EXPECT_EQ(pool->processes(), 2);
  std::vector<int> in(100);
  for (int i = 0; i < 100; ++i) in[i] = i;
  ASSERT_OK_AND_ASSIGN(std::vector<int> out, pool->Map(Square, in));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(out[i], i * i);
  ASSERT_OK_AND_ASSIGN(std::vector<int> out1, pool->Map(Square, in, /*chunksize=*/1));
  EXPECT_EQ(out1, out);
  ASSERT_OK_AND_ASSIGN(int v, pool->Apply(Add, 2, 3));
  EXPECT_EQ(v, 5);
  ASSERT_OK_AND_ASSIGN(std::string g, pool->Apply(Greet, "pool"));
  EXPECT_EQ(g, "hello pool");
  std::vector<std::tuple<int, int>> pairs = {{1, 2}, {3, 4}, {5, 6}};
  ASSERT_OK_AND_ASSIGN(std::vector<int> sums, pool->StarMap(Add, pairs));
  EXPECT_EQ(sums, (std::vector<int>{3, 7, 11}));
  ASSERT_OK_AND_ASSIGN(std::vector<int> none, pool->Map(Square, std::vector<int>{}));
  EXPECT_TRUE(none.empty());
  ASSERT_OK_AND_ASSIGN(auto lambda, pool->Map([](int x) { return x + 1; }, std::vector<int>{1, 2}));
  EXPECT_EQ(lambda, (std::vector<int>{2, 3}));
  MPROC_EXPECT_OK(pool->Apply(Nothing).status());
  // A braced list of items, and a function returning bool (std::vector<bool> has no slots
  // to decode into: the pool decodes into its own).
  EXPECT_THAT(pool->Map(Square, {1, 2, 3}), IsOkAndHolds(std::vector<int>{1, 4, 9}));
  // Workers are named as CPython's ("PoolWorker-N"), and their parent is this process.
  ASSERT_OK_AND_ASSIGN(std::string worker, pool->Apply(WorkerName, 0));
  EXPECT_THAT(worker, ::testing::MatchesRegex("PoolWorker-[0-9:]+"));
  EXPECT_THAT(pool->Apply(WorkerParent, 0), IsOkAndHolds(::getpid()));
  ASSERT_OK_AND_ASSIGN(std::vector<bool> even, pool->Map(IsEven, in, /*chunksize=*/7));
  ASSERT_EQ(even.size(), in.size());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(even[i], i % 2 == 0) << i;
  MPROC_ASSERT_OK(pool->Close());
  MPROC_ASSERT_OK(pool->Join());
}

TEST_P(PoolTest, AsyncResultsAndCallbacks) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  AsyncResult<int> slow = pool->ApplyAsync(SleepMs, 300);
  EXPECT_FALSE(slow.Ready());
  EXPECT_THAT(slow.Successful(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(slow.Get(absl::Milliseconds(10)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(slow.Wait(absl::Seconds(30)));
  ASSERT_OK_AND_ASSIGN(bool ok, slow.Successful());
  EXPECT_TRUE(ok);
  EXPECT_THAT(slow.Get(), IsOkAndHolds(300));

  std::atomic<int> got{0};
  std::atomic<bool> errored{false};
  Callbacks<int> cbs;
  cbs.on_success = [&](const int& v) { got = v; };
  cbs.on_error = [&](const absl::Status&) { errored = true; };
  AsyncResult<int> r = pool->ApplyAsyncWithCallbacks(cbs, Square, 9);
  EXPECT_THAT(r.Get(), IsOkAndHolds(81));
  EXPECT_EQ(got.load(), 81);  // set before the result was published
  Callbacks<int> ecbs;
  ecbs.on_error = [&](const absl::Status& s) { errored = absl::IsAborted(s); };
  AsyncResult<int> e = pool->ApplyAsyncWithCallbacks(ecbs, FailOnSeven, 7);
  EXPECT_THAT(e.Get(), StatusIs(absl::StatusCode::kAborted));
  EXPECT_TRUE(errored.load());
  ASSERT_OK_AND_ASSIGN(bool succeeded, e.Successful());
  EXPECT_FALSE(succeeded);
}

// Waits (bounded) until every dropped pool's thread has freed it, then says whether every
// pid is reaped (gone from the process table, not a zombie).
bool OrphansFreedAndReaped(const std::vector<pid_t>& pids) {
  for (int i = 0; i < 30000 && pool_internal::RunningOrphans() > 0; ++i) ::usleep(1000);
  if (pool_internal::RunningOrphans() > 0) return false;
  for (pid_t p : pids) {
    if (::kill(p, 0) == 0) return false;
  }
  return true;
}

// A Pool dropped from one of its own callbacks (which run on the pool thread): it cannot join
// that thread, so it terminates once the callback returns and the thread frees it; the tasks
// still out fail ABORTED and every worker is reaped. Before, the destructor's join of its own
// thread threw and ended the program (std::terminate).
TEST_P(PoolTest, APoolDroppedFromItsOwnCallbackTerminatesAndFreesItself) {
  for (bool closed_first : {false, true}) {  // a closed Pool's drop terminates it too
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
    const std::vector<pid_t> pids = pool->WorkerPids();
    ASSERT_EQ(pids.size(), 2u);
    std::atomic<bool> dropped{false};
    std::atomic<bool> on_pool_thread{false};
    const std::thread::id me = std::this_thread::get_id();
    Callbacks<int> cbs;
    cbs.on_success = [&](const int&) {
      on_pool_thread = std::this_thread::get_id() != me;
      pool.reset();
      dropped = true;
    };
    // It completes once the gate opens: after its callbacks are in place.
    ASSERT_OK_AND_ASSIGN(Array<int32_t> gate, Array<int32_t>::Create(1, LockMode::kNone));
    AsyncResult<int> held = pool->ApplyAsync(SleepMs, 60000);  // still running at the drop
    AsyncResult<int> first = pool->ApplyAsyncWithCallbacks(cbs, WaitForGate, gate);
    if (closed_first) MPROC_ASSERT_OK(pool->Close());
    std::atomic_ref<int32_t>(gate[0]).store(1);
    EXPECT_THAT(first.Get(absl::Seconds(30)), IsOkAndHolds(300));
    EXPECT_THAT(held.Get(absl::Seconds(30)),
                StatusIs(absl::StatusCode::kAborted, HasSubstr("terminated")))
        << "closed first: " << closed_first;
    EXPECT_TRUE(dropped.load());
    EXPECT_TRUE(on_pool_thread.load());
    EXPECT_TRUE(OrphansFreedAndReaped(pids)) << "a worker of the dropped pool was not reaped";
  }
}

// An executor dropped from one of its own done callbacks: it stops taking work, finishes what
// was submitted (CPython's shutdown(wait=True) from a callback raises and the work goes on),
// then frees itself; its futures complete with their values. Before: std::terminate.
TEST_P(PoolTest, AnExecutorDroppedFromItsOwnDoneCallbackFinishesItsWorkAndFreesItself) {
  ExecutorOptions o;
  o.max_workers = 2;
  o.start_method = GetParam();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProcessPoolExecutor> ex, ProcessPoolExecutor::Create(o));
  const std::vector<pid_t> pids = ex->WorkerPids();
  ASSERT_EQ(pids.size(), 2u);
  std::atomic<bool> dropped{false};
  std::atomic<bool> on_pool_thread{false};
  const std::thread::id me = std::this_thread::get_id();
  // The first task completes once the gate opens, after its callback is in place; the others
  // (about 800 ms of work, mostly on the second worker) are still queued or running then.
  ASSERT_OK_AND_ASSIGN(Array<int32_t> gate, Array<int32_t>::Create(1, LockMode::kNone));
  std::vector<Future<int>> fs;
  fs.push_back(ex->Submit(WaitForGate, gate));
  for (int i = 1; i <= 8; ++i) fs.push_back(ex->Submit(SleepMs, 100 + i));
  fs[0].AddDoneCallback([&](const Future<int>&) {
    on_pool_thread = std::this_thread::get_id() != me;
    ex.reset();
    dropped = true;
  });
  std::atomic_ref<int32_t>(gate[0]).store(1);
  EXPECT_THAT(fs[0].Result(absl::Seconds(30)), IsOkAndHolds(300));
  for (int i = 1; i <= 8; ++i) EXPECT_THAT(fs[i].Result(absl::Seconds(30)), IsOkAndHolds(100 + i));
  for (int i = 0; i < 3000 && !dropped.load(); ++i) ::usleep(1000);
  EXPECT_TRUE(dropped.load());
  EXPECT_TRUE(on_pool_thread.load());
  EXPECT_FALSE(fs[8].Cancel());  // done: the future never reaches the freed executor
  EXPECT_TRUE(OrphansFreedAndReaped(pids)) << "a worker of the dropped executor was not reaped";
}

TEST_P(PoolTest, ErrorsTravelAsRemoteErrors) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  absl::StatusOr<int> r = pool->Apply(FailOnSeven, 7);
  ASSERT_THAT(r, StatusIs(absl::StatusCode::kAborted, HasSubstr("seven is not allowed")));
  std::optional<RemoteError> e = RemoteErrorFromStatus(r.status());
  ASSERT_TRUE(e.has_value());
  EXPECT_THAT(e->type_name, HasSubstr("invalid_argument"));
  EXPECT_NE(e->pid, ::getpid());
  // Map: the first error after the whole job; the pool keeps serving.
  std::vector<int> in = {1, 2, 7, 4, 7};
  EXPECT_THAT(pool->Map(FailOnSeven, in, 1), StatusIs(absl::StatusCode::kAborted));
  // IMap: an error at one item does not stop the later ones.
  ResultIterator<int> it = pool->IMap(FailOnSeven, in);
  std::vector<std::string> seen;
  while (auto v = it.Next(absl::Seconds(30))) {
    seen.push_back(v->ok() ? std::to_string(**v) : "error");
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"1", "2", "error", "4", "error"}));
  // The same in a range-for; one that stops early leaves the rest to Next().
  seen.clear();
  for (absl::StatusOr<int> v : pool->IMap(FailOnSeven, in)) {
    seen.push_back(v.ok() ? std::to_string(*v) : "error");
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"1", "2", "error", "4", "error"}));
  ResultIterator<int> part = pool->IMap(Square, in);
  for (absl::StatusOr<int>& v : part) {
    ASSERT_THAT(v, IsOkAndHolds(1));
    break;
  }
  std::vector<int> rest;
  while (auto v = part.Next(absl::Seconds(30))) rest.push_back(v->value());
  EXPECT_EQ(rest, (std::vector<int>{4, 49, 16, 49}));
  ASSERT_OK_AND_ASSIGN(int fine, pool->Apply(Square, 4));
  EXPECT_EQ(fine, 16);
}

// Get on a temporary handle moves the value out only when no copy is left: a copy still
// reads the whole value afterwards.
TEST_P(PoolTest, AsyncResultGetOnATemporaryLeavesOtherCopiesTheirValue) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  std::vector<int> in = {1, 2, 3};
  AsyncResult<std::vector<int>> a = pool->MapAsync(Square, in);
  AsyncResult<std::vector<int>> b = a;
  EXPECT_THAT(std::move(a).Get(absl::Seconds(30)), IsOkAndHolds(std::vector<int>{1, 4, 9}));
  EXPECT_THAT(b.Get(), IsOkAndHolds(std::vector<int>{1, 4, 9}));
  EXPECT_THAT(b.GetStatus(), IsOk());
  EXPECT_THAT(std::move(b).Get(), IsOkAndHolds(std::vector<int>{1, 4, 9}));
  EXPECT_THAT(pool->MapAsync(FailOnSeven, std::vector<int>{7}).GetStatus(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kAborted));
}

// Map hands small chunks to the pool in batches (64 chunks or 16 KiB): a map of many more
// chunks than a batch keeps input order, and its error is the first in input order even when
// later batches fail too.
TEST_P(PoolTest, MapOfManySmallChunksKeepsOrderAcrossBatches) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  std::vector<int> in(1000);
  for (int i = 0; i < 1000; ++i) in[i] = i % 7 == 0 ? i + 1 : i;  // no sevens
  ASSERT_OK_AND_ASSIGN(std::vector<int> out, pool->Map(Square, in, /*chunksize=*/1));
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], in[i] * in[i]) << i;
  ASSERT_OK_AND_ASSIGN(std::vector<int> out3, pool->Map(Square, in, /*chunksize=*/3));
  EXPECT_EQ(out3, out);
  // Failures at 300 (the fifth batch) and 900: the error reported is the one at 300.
  in[900] = -900;
  in[300] = -300;
  absl::StatusOr<std::vector<int>> bad = pool->Map(FailOnNegative, in, /*chunksize=*/1);
  ASSERT_THAT(bad, StatusIs(absl::StatusCode::kAborted, HasSubstr("negative: -300")));
  ASSERT_OK_AND_ASSIGN(int fine, pool->Apply(Square, 5));
  EXPECT_EQ(fine, 25);
}

// A task the pool cannot send (its descriptor is not open) fails alone, with a clear status;
// the worker never saw it, and the pool goes on serving, descriptors included.
TEST_P(PoolTest, ATaskThatCannotBeSentFailsAloneAndThePoolServesOn) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  absl::StatusOr<int> bad = pool->ApplyAsync(IsOpen, UniqueFd(-1)).Get(absl::Seconds(30));
  EXPECT_THAT(bad, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not open")))
      << bad.status();
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ::close(fds[1]);
  EXPECT_THAT(pool->ApplyAsync(IsOpen, UniqueFd(fds[0])).Get(absl::Seconds(30)), IsOkAndHolds(1));
  std::vector<int> in(50);
  for (int i = 0; i < 50; ++i) in[i] = i;
  ASSERT_OK_AND_ASSIGN(std::vector<int> out, pool->Map(Square, in, 1));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(out[i], i * i);
}

// A result that carries a descriptor arrives open: the worker keeps the value (which owns it)
// until the result is sent, not just until it is encoded.
TEST_P(PoolTest, AResultCarryingADescriptorArrivesOpen) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  std::vector<std::string> texts = {"one", "two", "three", "four"};
  absl::StatusOr<std::vector<Queue<std::string>>> queues = pool->Map(QueueHolding, texts, 2);
  MPROC_ASSERT_OK(queues.status());
  ASSERT_EQ(queues->size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_THAT((*queues)[i].Get(absl::Seconds(30)), IsOkAndHolds(texts[i])) << i;
  }
}

std::string Reverse(std::string s) { return std::string(s.rbegin(), s.rend()); }

// Big tasks and big results both ways, several tasks per worker: the pool thread must never
// block writing a task to a worker that is blocked writing a result back.
TEST_P(PoolTest, LargeTasksAndResultsDoNotDeadlock) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  std::vector<std::string> in;
  for (int i = 0; i < 32; ++i) in.push_back(std::string(100 << 10, static_cast<char>('a' + i % 26)) + "!");
  auto r = pool->MapAsync(Reverse, in, 4);
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> out, r.Get(absl::Seconds(60)));
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) EXPECT_EQ(out[i], Reverse(in[i]));
  std::vector<int64_t> many(1'000'000, 3);
  auto m = pool->MapAsync([](int64_t x) { return x * x; }, many);
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> sq, m.Get(absl::Seconds(60)));
  EXPECT_EQ(sq.size(), many.size());
  EXPECT_EQ(sq.back(), 9);
  // Messages around a ring record's limit (32 KiB) and far past the ring (streamed in pieces),
  // one task each, both ways.
  std::vector<std::string> sized;
  for (size_t n : {size_t{0}, size_t{1}, size_t{32740}, size_t{32750}, size_t{32760},
                   size_t{32770}, size_t{128 << 10}, size_t{3 << 20}}) {
    std::string x(n, '\0');
    for (size_t k = 0; k < n; ++k) x[k] = static_cast<char>(k * 7 + n);
    sized.push_back(std::move(x));
  }
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> back, pool->Map(Reverse, sized, 1));
  ASSERT_EQ(back.size(), sized.size());
  for (size_t i = 0; i < sized.size(); ++i) EXPECT_TRUE(back[i] == Reverse(sized[i])) << i;
  ASSERT_OK_AND_ASSIGN(std::string one, pool->Apply(Reverse, sized.back()));
  EXPECT_TRUE(one == Reverse(sized.back()));
}

TEST_P(PoolTest, IMapUnorderedYieldsEverythingOnce) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  std::vector<int> in = {200, 10, 100, 1, 50};
  ResultIterator<int> it = pool->IMapUnordered(SleepMs, in);
  std::multiset<int> got;
  while (auto v = it.Next(absl::Seconds(30))) {
    ASSERT_TRUE(v->ok());
    got.insert(**v);
  }
  EXPECT_EQ(got, std::multiset<int>(in.begin(), in.end()));
}

TEST_P(PoolTest, InitializerRunsInEveryWorker) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts(), SetInit, 42));
  ASSERT_OK_AND_ASSIGN(std::vector<int> v, pool->Map(ReadInit, std::vector<int>(8, 0), 1));
  for (int x : v) EXPECT_EQ(x, 42);
}

// Out of descriptors while copying the initializer's handles: Create says so, naming them,
// instead of handing workers descriptor -1.
TEST_P(PoolTest, RunningOutOfDescriptorsForTheInitializerIsAClearError) {
  StartMethod method = GetParam();
  pid_t pid = testing::Child([method] {
    absl::StatusOr<Array<int32_t>> a = Array<int32_t>::Create(4, LockMode::kNone);
    if (!a.ok()) return 2;
    // Every descriptor number below the lowest free one is taken: with that as the limit, the
    // next descriptor the process asks for fails with EMFILE.
    const int lowest_free = ::fcntl(0, F_DUPFD, 0);
    ::close(lowest_free);
    rlimit lim = {static_cast<rlim_t>(lowest_free), static_cast<rlim_t>(lowest_free)};
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 3;
    Pool::Options o;
    o.processes = 1;
    o.start_method = method;
    absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Create(o, KeepArray, *a);
    if (pool.ok()) return 4;
    std::fprintf(stderr, "%s\n", pool.status().ToString().c_str());
    return std::string(pool.status().message()).find("Pool initializer argument") !=
                   std::string::npos
               ? 0
               : 5;
  });
  EXPECT_EQ(testing::Join(pid), 0);
}

// The interrupt-mode SIGINT handler against pools that end while SIGINTs arrive: a handler
// must never write into a descriptor its pool closed and the kernel gave to someone else.
// Pools come and go 3000 times, each time another eventfd takes the freed number at once,
// while another thread fires SIGINTs; that eventfd must never receive the handler's write.
// (The race is a few instructions wide: this rarely caught it before the fix, which closes it
// by construction, a Dekker pair between the handler and UnregisterSigintFd.)
TEST(PoolSigintTest, TheHandlerNeverWritesIntoADescriptorAfterItsPoolClosedIt) {
  UniqueFd keeper(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));  // keeps the handler installed
  MPROC_ASSERT_OK(pool_internal::RegisterSigintFd(keeper.get()));
  std::atomic<bool> stop{false};
  std::thread firing([&] {
    while (!stop.load()) ::kill(::getpid(), SIGINT);
  });
  int stray = 0;
  for (int i = 0; i < 3000 && stray == 0; ++i) {
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_GE(efd, 0);
    MPROC_ASSERT_OK(pool_internal::RegisterSigintFd(efd));
    pool_internal::ReleaseSigintFd(UniqueFd(efd));  // closes it
    // Someone else's eventfd takes the freed number at once; it is never registered.
    int other = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_GE(other, 0);
    for (int k = 0; k < 200; ++k) CpuRelax();  // time for a stale handler to write
    uint64_t v = 0;
    if (::read(other, &v, sizeof(v)) == sizeof(v)) ++stray;
    ::close(other);
  }
  stop = true;
  firing.join();
  pool_internal::ReleaseSigintFd(std::move(keeper));
  EXPECT_EQ(stray, 0);
}

// A handler that never finishes (its thread stopped mid-write, simulated through the running
// count): releasing a descriptor waits a bounded time, then keeps the descriptor open rather
// than closing a number a late write could reach. Before, the wait spun for ever.
TEST(PoolSigintTest, ReleasingWhileAHandlerIsStuckIsBoundedAndKeepsTheDescriptorOpen) {
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(efd, 0);
  MPROC_ASSERT_OK(pool_internal::RegisterSigintFd(efd));
  pool_internal::SigintHandlerRunningForTest(+1);
  std::atomic<bool> returned{false};
  std::thread releaser([&] {
    pool_internal::ReleaseSigintFd(UniqueFd(efd));
    returned = true;
  });
  for (int i = 0; i < 20000 && !returned.load(); ++i) ::usleep(1000);
  const bool bounded = returned.load();
  pool_internal::SigintHandlerRunningForTest(-1);  // lets a still-waiting release finish
  releaser.join();
  EXPECT_TRUE(bounded) << "the release waited for the stuck handler for more than 20 s";
  EXPECT_GE(::fcntl(efd, F_GETFD), 0) << "the descriptor a stuck handler may write was closed";
  ::close(efd);  // the test's own clean-up (the leak check counts descriptors)
  // With no handler running, a release closes the descriptor at once.
  int other = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(other, 0);
  MPROC_ASSERT_OK(pool_internal::RegisterSigintFd(other));
  pool_internal::ReleaseSigintFd(UniqueFd(other));
  EXPECT_LT(::fcntl(other, F_GETFD), 0);
}

TEST_P(PoolTest, FailingInitializerIsReportedOnceNotRespawnedForever) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts(), ThrowingInit));
  absl::StatusOr<int> r = pool->Apply(Square, 3);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kAborted, HasSubstr("initializer failed")));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kAborted, HasSubstr("initializer exploded")));
  EXPECT_THAT(pool->Apply(Square, 3), StatusIs(absl::StatusCode::kAborted));
  ::usleep(200'000);
  EXPECT_TRUE(pool->WorkerPids().size() <= 2u);  // nothing respawning in a loop
}

TEST_P(PoolTest, MaxTasksPerChildRecyclesWorkers) {
  Pool::Options o = Opts(1);
  o.maxtasksperchild = 2;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> pids,
                       pool->MapAsync(MyPid, std::vector<int>(6, 0), 1).Get(absl::Seconds(60)));
  std::set<int32_t> distinct(pids.begin(), pids.end());
  EXPECT_EQ(distinct.size(), 3u);  // 6 tasks, 2 per worker
}

TEST_P(PoolTest, AKilledWorkerFailsExactlyItsTaskAndIsReplaced) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  std::vector<std::tuple<int, int>> in;
  for (int i = 0; i < 20; ++i) in.emplace_back(i, 13);
  auto r = pool->StarMapAsync(KillSelfOn, in, 1);
  EXPECT_THAT(r.Get(absl::Seconds(60)),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("signal 9")));
  // The pool goes on with a replacement.
  ASSERT_OK_AND_ASSIGN(std::vector<int> again,
                       pool->MapAsync(Square, std::vector<int>{1, 2, 3}).Get(absl::Seconds(60)));
  EXPECT_EQ(again, (std::vector<int>{1, 4, 9}));
  EXPECT_EQ(pool->WorkerPids().size(), 2u);
}

TEST_P(PoolTest, TerminateIsPromptAndFailsUnfinishedTasks) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts()));
  auto r = pool->MapAsync(SleepMs, std::vector<int>(6, 2000), 1);
  ::usleep(100'000);
  double t0 = testing::NowSeconds();
  MPROC_ASSERT_OK(pool->Terminate());
  MPROC_ASSERT_OK(pool->Join());
  EXPECT_LT(testing::NowSeconds() - t0, 10.0);  // generous bound: no hang
  EXPECT_THAT(r.Get(absl::Seconds(10)), StatusIs(absl::StatusCode::kAborted));
  EXPECT_TRUE(pool->WorkerPids().empty());
  EXPECT_THAT(pool->Apply(Square, 1), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// What a task prints is written before its result is sent: terminating the pool right after
// the results arrive (as CPython's `with Pool()` does) loses none of it. Before this, the
// workers died with the lines still in their stdout buffers.
TEST_P(PoolTest, WhatATaskPrintsIsNotLostWhenThePoolIsTerminated) {
  char path[] = "/tmp/mproc-pool-stdout-XXXXXX";
  int file = ::mkstemp(path);
  ASSERT_GE(file, 0);
  std::fflush(stdout);
  int saved = ::dup(1);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(::dup2(file, 1), 1);  // the workers (and a fork server started now) inherit it
  absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Create(Opts());
  ::dup2(saved, 1);
  ::close(saved);
  ::close(file);
  MPROC_ASSERT_OK(pool.status());
  EXPECT_THAT((*pool)->Map(PrintAndReturn, {0, 1, 2, 3}, 1),
              IsOkAndHolds(std::vector<int>{0, 1, 2, 3}));
  MPROC_ASSERT_OK((*pool)->Terminate());
  MPROC_ASSERT_OK((*pool)->Join());
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ::unlink(path);
  std::sort(lines.begin(), lines.end());
  EXPECT_THAT(lines, ElementsAre("task 0", "task 1", "task 2", "task 3"));
}

TEST_P(PoolTest, JoinBeforeCloseIsAnError) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(Opts(1)));
  EXPECT_THAT(pool->Join(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("still running")));
  MPROC_ASSERT_OK(pool->Close());
  EXPECT_THAT(pool->Apply(Square, 1), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("closed")));
  MPROC_ASSERT_OK(pool->Join());
}

// A process that exits while its /proc entry is read must read as gone, never as an error.
bool Gone(pid_t pid) {
  const char state = testing::TaskState(pid);
  return state == '?' || state == 'Z' || state == 'X';
}

// The owner of a pool gets `sig` (its default action kills it) while its workers run long
// tasks: no worker outlives it.
void ExpectWorkersDieWithTheirOwner(StartMethod method, int sig) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  pid_t owner = testing::Child([&] {
    ::close(p[0]);
    ::signal(SIGINT, SIG_DFL);
    Pool::Options o;
    o.processes = 2;
    o.start_method = method;
    auto pool = Pool::Create(o);
    if (!pool.ok()) return 2;
    auto r = (*pool)->MapAsync(SleepMs, std::vector<int>(4, 60'000), 1);
    ::usleep(200'000);  // the tasks are running
    std::vector<pid_t> pids = (*pool)->WorkerPids();
    for (pid_t pid : pids) (void)!::write(p[1], &pid, sizeof(pid));
    ::close(p[1]);
    ::pause();
    return 3;
  });
  ::close(p[1]);
  // Exactly two pids (fork workers inherit the pipe's write end, so no EOF comes).
  std::vector<pid_t> workers;
  pid_t pid;
  while (workers.size() < 2 &&
         ::read(p[0], &pid, sizeof(pid)) == static_cast<ssize_t>(sizeof(pid))) {
    workers.push_back(pid);
  }
  ::close(p[0]);
  ASSERT_EQ(workers.size(), 2u);
  ::kill(owner, sig);
  EXPECT_EQ(testing::Join(owner, 30), 128 + sig);
  for (pid_t w : workers) {
    bool gone = false;
    for (int i = 0; i < 1000 && !gone; ++i) {  // a generous 10 s bound
      gone = Gone(w);
      if (!gone) ::usleep(10'000);
    }
    EXPECT_TRUE(gone) << "worker " << w << " outlived its pool's owner (signal " << sig << ")";
    if (!gone) ::kill(w, SIGKILL);
  }
}

TEST_P(PoolTest, WorkersDoNotOutliveAKilledOwner) {
  ExpectWorkersDieWithTheirOwner(GetParam(), SIGKILL);
}

// The default SIGINT rule: mproc installs nothing, Ctrl-C kills the program, and its workers
// die with it.
TEST_P(PoolTest, ByDefaultSigintKillsTheOwnerAndItsWorkersWithIt) {
  ExpectWorkersDieWithTheirOwner(GetParam(), SIGINT);
}

// The opt-in interrupt mode: SIGINT makes a blocked Map return CANCELLED, workers ignore
// SIGINT, the pool goes on serving, and the previous SIGINT disposition comes back after.
TEST_P(PoolTest, InInterruptModeSigintCancelsABlockedMap) {
  StartMethod method = GetParam();
  pid_t child = testing::Child([method]() -> int {
    ::signal(SIGINT, SIG_DFL);
    {
      Pool::Options o;
      o.processes = 2;
      o.start_method = method;
      o.cancel_on_sigint = true;
      auto pool = Pool::Create(o);
      if (!pool.ok()) return 2;
      struct sigaction now;
      ::sigaction(SIGINT, nullptr, &now);
      if (now.sa_handler == SIG_DFL) return 3;  // the pool's handler is installed
      std::thread interrupter([] {
        ::usleep(300'000);
        ::kill(::getpid(), SIGINT);
      });
      const double t0 = testing::NowSeconds();
      absl::StatusOr<std::vector<int>> r = (*pool)->Map(SleepMs, std::vector<int>(4, 1500), 1);
      const double took = testing::NowSeconds() - t0;
      interrupter.join();
      if (r.ok() || !absl::IsCancelled(r.status())) return 4;
      if (took > 1.2) return 5;  // returned at the signal, not after the tasks
      // A worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group).
      std::vector<pid_t> before = (*pool)->WorkerPids();
      if (before.size() != 2) return 6;
      ::kill(before[0], SIGINT);
      ::usleep(200'000);
      if ((*pool)->WorkerPids() != before) return 7;
      // The pool goes on.
      absl::StatusOr<std::vector<int>> after = (*pool)->Map(Square, std::vector<int>{2, 3});
      if (!after.ok() || *after != std::vector<int>{4, 9}) return 8;
    }
    struct sigaction restored;
    ::sigaction(SIGINT, nullptr, &restored);
    return restored.sa_handler == SIG_DFL ? 0 : 9;
  });
  EXPECT_EQ(testing::Join(child, 60), 0);
}

int64_t Twice(int64_t x) { return 2 * x; }

long VmHwmKiB() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

// 10^7 items through IMap with chunksize 1000 and a bounded window: the input is generated
// lazily and results are consumed as they come, so the peak RSS grows by less than 64 MiB.
TEST(PoolMemoryTest, LazyIMapOfTenMillionItemsStaysBounded) {
  Pool::Options o;
  o.processes = 2;
  o.start_method = StartMethod::kForkServer;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  {  // warm up, then reset the peak ("5" resets VmHWM, Linux 4.0+)
    ASSERT_OK_AND_ASSIGN(auto warm, pool->Map(Twice, std::vector<int64_t>(10000, 1)));
    std::ofstream("/proc/self/clear_refs") << "5";
  }
  long before = VmHwmKiB();
  constexpr int64_t kItems = 10'000'000;
  ResultIterator<int64_t> it =
      pool->IMap(Twice, CountUpTo(kItems), /*chunksize=*/1000, /*buffersize=*/8);
  int64_t expect = 0;
  bool in_order = true;
  while (auto v = it.Next(absl::Seconds(60))) {
    ASSERT_TRUE(v->ok()) << v->status();
    in_order &= (**v == 2 * expect);
    ++expect;
  }
  EXPECT_TRUE(in_order);
  EXPECT_EQ(expect, kItems);
  long growth_kib = VmHwmKiB() - before;
  std::printf("peak RSS growth over 10^7 lazy IMap items: %ld KiB\n", growth_kib);
#if defined(__SANITIZE_ADDRESS__)
  // ASan keeps freed memory in its quarantine (256 MiB by default): RSS says nothing here.
#else
  EXPECT_LT(growth_kib, 64 * 1024);
#endif
  ShutdownForkServer();
}

TEST(PoolMemoryTest, LazyIMapUnorderedYieldsEachItemOnce) {
  Pool::Options o;
  o.processes = 2;
  o.start_method = StartMethod::kFork;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  ResultIterator<int64_t> it = pool->IMapUnordered(Twice, CountUpTo(int64_t{1000}), 7, 3);
  std::vector<int> seen(2000, 0);
  int n = 0;
  while (auto v = it.Next(absl::Seconds(60))) {
    ASSERT_TRUE(v->ok());
    ++seen[static_cast<size_t>(**v)];
    ++n;
  }
  EXPECT_EQ(n, 1000);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(seen[static_cast<size_t>(2 * i)], 1);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, PoolTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

// Captures what `body` writes to stderr (fd 2), in a forked helper; returns it.
std::string StderrOf(const std::function<int()>& body, int* code) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  pid_t pid = testing::Child([&] {
    ::dup2(fds[1], 2);
    return body();
  });
  ::close(fds[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  *code = testing::Join(pid);
  return out;
}

int ForkPoolSquares() {
  Pool::Options o;
  o.processes = 2;
  o.start_method = StartMethod::kFork;
  absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Create(o);
  if (!pool.ok()) return 2;
  absl::StatusOr<std::vector<int>> v = (*pool)->Map(Square, std::vector<int>{1, 2, 3});
  return v.ok() && *v == std::vector<int>{1, 4, 9} ? 0 : 3;
}

// A fork Pool forks its caller (the zygote and the first workers). A caller that runs other
// threads is warned, as CPython 3.12 warns at fork(); a single-threaded one is not. Either
// way the pool works.
TEST(PoolForkTest, CreateWarnsWhenTheCallerRunsOtherThreads) {
  int code = -1;
  std::string quiet = StderrOf(ForkPoolSquares, &code);
  EXPECT_EQ(code, 0);
  EXPECT_THAT(quiet, Not(HasSubstr("warning")));
  std::string threaded = StderrOf([] {
    std::atomic<bool> stop{false};
    std::thread busy([&] {
      while (!stop) ::usleep(1000);
    });
    int r = ForkPoolSquares();
    stop = true;
    busy.join();
    return r;
  }, &code);
  EXPECT_EQ(code, 0);
  EXPECT_THAT(threaded, HasSubstr("runs 2 threads"));
  EXPECT_THAT(threaded, HasSubstr("CPython 3.12"));
}

// The distinct sockets a process holds (its /proc fd links that name a socket, each socket
// once: the placeholders a fork child puts where its parent's channel ends were are all one
// socket, base/parent_only_fd.h).
int SocketsOf(pid_t pid) {
  std::set<std::string> sockets;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      char link[64] = {};
      if (::readlink((dir + "/" + e->d_name).c_str(), link, sizeof(link) - 1) > 0 &&
          std::string(link).rfind("socket:", 0) == 0) {
        sockets.insert(link);
      }
    }
    ::closedir(d);
  }
  return static_cast<int>(sockets.size());
}

// Fork workers are forked one after another from the caller; each used to inherit the pool's
// ends of its earlier siblings' channels. Each now holds the same descriptors as the first.
TEST(PoolForkTest, ForkWorkersHoldNoSiblingsChannels) {
  Pool::Options o;
  o.processes = 3;
  o.start_method = StartMethod::kFork;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  ASSERT_OK_AND_ASSIGN(std::vector<int> v, pool->Map(Square, std::vector<int>{1, 2, 3}));
  std::vector<pid_t> pids = pool->WorkerPids();
  ASSERT_EQ(pids.size(), 3u);
  const int first = SocketsOf(pids[0]);
  EXPECT_GE(first, 1);
  for (pid_t pid : pids) EXPECT_EQ(SocketsOf(pid), first) << "worker " << pid;
}

// A second fork Pool's zygote and workers are forked from a process that already holds the
// first Pool's ends of its channels (its zygote's control socket, its workers' sockets). They
// used to inherit them: the first Pool's zygote then never read end of file when its Pool
// ended, and its Pool's destructor waited 5 s before killing it. Now the second Pool's workers
// hold the same descriptors as the first's, and the first Pool ends as if it were alone.
TEST(PoolForkTest, ASecondForkPoolHoldsNothingOfTheFirst) {
  Pool::Options o;
  o.processes = 2;
  o.start_method = StartMethod::kFork;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> first, Pool::Create(o));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> second, Pool::Create(o));
  ASSERT_OK_AND_ASSIGN(std::vector<int> a, first->Map(Square, std::vector<int>{1, 2}));
  ASSERT_OK_AND_ASSIGN(std::vector<int> b, second->Map(Square, std::vector<int>{1, 2}));
  const std::vector<pid_t> first_pids = first->WorkerPids();
  const std::vector<pid_t> second_pids = second->WorkerPids();
  ASSERT_EQ(first_pids.size(), 2u);
  ASSERT_EQ(second_pids.size(), 2u);
  const int alone = SocketsOf(first_pids[0]);
  for (pid_t pid : second_pids) EXPECT_EQ(SocketsOf(pid), alone) << "worker " << pid;
  // A replacement worker comes from the second Pool's zygote: it holds nothing of the first
  // Pool either.
  ASSERT_EQ(::kill(second_pids[0], SIGKILL), 0);
  std::vector<pid_t> now;
  for (int i = 0; i < 1000; ++i) {
    (void)second->Map(Square, std::vector<int>{1, 2});
    now = second->WorkerPids();
    if (now.size() == 2 && now[0] != second_pids[0] && now[1] != second_pids[0]) break;
    ::usleep(10'000);
  }
  ASSERT_EQ(now.size(), 2u);
  for (pid_t pid : now) EXPECT_EQ(SocketsOf(pid), alone) << "worker " << pid;
  const int64_t start = MonotonicNowNs();
  first.reset();
  EXPECT_LT(MonotonicNowNs() - start, 4'000'000'000) << "the first Pool's end waited out its zygote";
}

TEST(PoolForkTest, CapturingInitializerUnderFork) {
  int captured = 7;
  Pool::Options o;
  o.processes = 1;
  o.start_method = StartMethod::kFork;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool,
                       Pool::Create(o, [captured] { g_init_value = captured; }));
  EXPECT_THAT(pool->Apply(ReadInit, 0), IsOkAndHolds(7));
  o.start_method = StartMethod::kSpawn;
  EXPECT_THAT(Pool::Create(o, [captured] { g_init_value = captured; }),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("fork")));
}

// 200 random worker kills during maps: every failure is ABORTED naming a killed worker, no
// worker fails more tasks than it can hold (4), nothing hangs, and the next map succeeds.
// Worker-side records of the kill test: which worker started each task, and whether it got to
// the end of it (handles passed through the initializer).
Array<int32_t> g_started_by;
Array<int32_t> g_finished;
void KeepRecords(Array<int32_t> started_by, Array<int32_t> finished) {
  g_started_by = std::move(started_by);
  g_finished = std::move(finished);
}
int RecordedSleep(int idx) {
  std::atomic_ref<int32_t>(g_started_by[static_cast<size_t>(idx)]).store(::getpid());
  ::usleep(3000);
  std::atomic_ref<int32_t>(g_finished[static_cast<size_t>(idx)]).store(1);
  return idx;
}

// 200 random worker kills while maps run: nothing hangs, the next map succeeds, and the tasks
// that fail are exactly the ones the killed workers held: every failure names a killed worker
// that either had started that task or had it queued (it never ran anywhere else), every task
// a killed worker had started and not finished failed naming it, no worker held more than 4,
// and every success ran to its end.
TEST(PoolKillTest, TwoHundredRandomWorkerKillsFailExactlyTheTasksTheyHeld) {
  constexpr int kMaxTasks = 4000;
  ASSERT_OK_AND_ASSIGN(Array<int32_t> started_by, Array<int32_t>::Create(kMaxTasks, LockMode::kNone));
  ASSERT_OK_AND_ASSIGN(Array<int32_t> finished, Array<int32_t>::Create(kMaxTasks, LockMode::kNone));
  Pool::Options o;
  o.processes = 2;
  o.start_method = StartMethod::kForkServer;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool,
                       Pool::Create(o, KeepRecords, started_by, finished));
  std::mt19937 rng(7);
  int kills = 0;
  int next = 0;
  std::set<pid_t> killed;
  std::map<int, absl::Status> outcome;  // task index -> its result
  while (kills < 200 && next + 8 <= kMaxTasks) {
    std::vector<int> batch;
    for (int i = 0; i < 8; ++i) batch.push_back(next++);
    ResultIterator<int> it = pool->IMapUnordered(RecordedSleep, batch, 1);
    for (int k = 0; k < 2 && kills < 200; ++k) {
      std::vector<pid_t> pids = pool->WorkerPids();
      if (pids.empty()) continue;
      ::usleep(std::uniform_int_distribution<int>(0, 4000)(rng));
      pid_t victim = pids[std::uniform_int_distribution<size_t>(0, pids.size() - 1)(rng)];
      ::kill(victim, SIGKILL);
      killed.insert(victim);
      ++kills;
    }
    // IMapUnordered gives no index with a failure, so match failures to the batch's tasks
    // that did not succeed.
    std::set<int> pending(batch.begin(), batch.end());
    std::vector<absl::Status> failures;
    while (auto v = it.Next(absl::Seconds(60))) {
      ASSERT_FALSE(absl::IsDeadlineExceeded(v->status())) << "a map hung";
      if (v->ok()) {
        outcome[**v] = absl::OkStatus();
        pending.erase(**v);
      } else {
        failures.push_back(v->status());
      }
    }
    ASSERT_EQ(failures.size(), pending.size());
    // Each failure names one worker; pair them with the unfinished tasks that worker held.
    std::map<pid_t, int> failures_of;
    for (const absl::Status& f : failures) {
      ASSERT_THAT(f, StatusIs(absl::StatusCode::kAborted, HasSubstr("pool worker pid")));
      std::string msg(f.message());
      pid_t pid = std::atoi(msg.c_str() + msg.find("pid ") + 4);
      ASSERT_TRUE(killed.count(pid)) << msg;
      ++failures_of[pid];
    }
    for (auto [pid, n] : failures_of) EXPECT_LE(n, 4) << "worker " << pid << " held at most 4";
    for (int idx : pending) {
      const int32_t by = started_by[static_cast<size_t>(idx)];
      // A failed task ran nowhere but on a killed worker (or not at all: it was queued).
      EXPECT_TRUE(by == 0 || killed.count(by)) << "task " << idx << " failed but ran on " << by;
      outcome[idx] = absl::AbortedError("failed");
    }
    for (int idx : batch) {
      const int32_t by = started_by[static_cast<size_t>(idx)];
      const bool done = finished[static_cast<size_t>(idx)] != 0;
      if (outcome[idx].ok()) {
        EXPECT_TRUE(done) << "task " << idx << " succeeded without finishing";
      } else if (by != 0 && !done) {
        // Started and cut short: its worker was killed, and the task failed.
        EXPECT_TRUE(killed.count(by)) << "task " << idx << " stopped on a live worker " << by;
      }
      if (by != 0 && !done) {
        EXPECT_FALSE(outcome[idx].ok()) << "task " << idx;
      }
    }
  }
  int failed = 0;
  for (const auto& [idx, st] : outcome) failed += st.ok() ? 0 : 1;
  EXPECT_GT(static_cast<int>(outcome.size()) - failed, 0);
  ASSERT_OK_AND_ASSIGN(std::vector<int> after, pool->Map(Square, std::vector<int>{5, 6}));
  EXPECT_EQ(after, (std::vector<int>{25, 36}));
  std::printf("%d kills, %d tasks failed, %d succeeded\n", kills, failed,
              static_cast<int>(outcome.size()) - failed);
  pool.reset();
  ShutdownForkServer();
}

// Progress callbacks: after each chunk, on the pool thread, done increasing to the total.
TEST(PoolProgressTest, MapAndIMapReportProgressPerChunk) {
  Pool::Options o;
  o.processes = 2;
  o.start_method = StartMethod::kForkServer;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  std::vector<int> inputs(100);
  for (int i = 0; i < 100; ++i) inputs[i] = i;
  std::mutex mu;
  std::vector<std::pair<size_t, size_t>> calls;
  std::set<std::thread::id> threads;
  auto record = [&](size_t done, size_t total) {
    std::lock_guard<std::mutex> lock(mu);
    calls.emplace_back(done, total);
    threads.insert(std::this_thread::get_id());
  };
  ASSERT_OK_AND_ASSIGN(std::vector<int> squares, pool->Map(Square, inputs, 10, record));
  EXPECT_EQ(squares[99], 99 * 99);
  ASSERT_EQ(calls.size(), 10u);
  for (size_t k = 0; k < calls.size(); ++k) {
    EXPECT_EQ(calls[k], std::make_pair((k + 1) * 10, size_t{100}));
  }
  EXPECT_EQ(threads.size(), 1u);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);  // the pool thread, not ours

  calls.clear();
  ResultIterator<int> it = pool->IMapUnordered(Square, inputs, 7, record);
  size_t n = 0;
  while (auto v = it.Next(absl::Seconds(30))) {
    ASSERT_TRUE(v->ok());
    ++n;
  }
  EXPECT_EQ(n, 100u);
  ASSERT_EQ(calls.size(), 15u);  // 14 chunks of 7 and one of 2
  EXPECT_EQ(calls.back(), std::make_pair(size_t{100}, size_t{100}));
  for (size_t k = 1; k < calls.size(); ++k) EXPECT_GT(calls[k].first, calls[k - 1].first);

  // A generator: the total is unknown (0).
  calls.clear();
  ResultIterator<int> lazy = pool->IMap(Square, CountUpTo(30), 10, 2, record);
  while (auto v = lazy.Next(absl::Seconds(30))) ASSERT_TRUE(v->ok());
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), std::make_pair(size_t{30}, size_t{0}));
  pool.reset();
  ShutdownForkServer();
}

// A lazy IMap feeds the pool as its results are taken. An iterator that outlives its Pool
// used to feed the freed core; now the next chunk fails FAILED_PRECONDITION and the iteration
// ends: results taken before the Pool went are intact, nothing is left hanging.
TEST(PoolIMapTest, ALazyIMapThatOutlivesItsPoolEndsWithAnError) {
  Pool::Options o;
  o.processes = 1;
  o.start_method = StartMethod::kFork;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  ResultIterator<int> it = pool->IMap(Square, CountUpTo(1000), /*chunksize=*/1, /*buffersize=*/2);
  std::optional<absl::StatusOr<int>> first = it.Next(absl::Seconds(30));
  ASSERT_TRUE(first.has_value());
  EXPECT_THAT(*first, IsOkAndHolds(0));
  pool.reset();  // terminated: what it held fails, and the iterator may not feed it again
  int ok = 1, failed = 0, gone = 0;
  while (auto v = it.Next(absl::Seconds(30))) {
    if (v->ok()) {
      EXPECT_EQ(**v, ok * ok);
      ++ok;
      continue;
    }
    ++failed;
    if (absl::IsFailedPrecondition(v->status()) &&
        absl::StrContains(v->status().message(), "gone")) {
      ++gone;
    }
  }
  EXPECT_LT(ok + failed, 1000);  // the rest of the input was never pulled
  EXPECT_GE(gone, 1) << ok << " ok, " << failed << " failed";
}

TEST(PoolProgressTest, ProgressBarDrawsOnlyOnATerminal) {
  EXPECT_EQ(ProgressLine("sq", 47, 100, 10), "sq [####------]   47/100   47%");
  EXPECT_EQ(ProgressLine("", 5, 0), "5 done");
  // Not a terminal: nothing is written.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd r(p[0]), w(p[1]);
  Progress quiet = ProgressBar("squares", w.get());
  quiet(1, 2);
  quiet(2, 2);
  char buf[256];
  EXPECT_EQ(::read(r.get(), buf, sizeof(buf)), -1);
  // A terminal (a pseudo-terminal here): redrawn in place, a newline at the end.
  UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(master.ok());
  ASSERT_EQ(::grantpt(master.get()), 0);
  ASSERT_EQ(::unlockpt(master.get()), 0);
  UniqueFd slave(::open(::ptsname(master.get()), O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(slave.ok());
  Progress bar = ProgressBar("squares", slave.get());
  bar(0, 10);
  bar(3, 10);   // within 100 ms of the last draw: skipped
  bar(10, 10);  // the end is always drawn
  bar(10, 10);  // and only once
  std::string out;
  for (int i = 0; i < 50; ++i) {
    ssize_t n = ::read(master.get(), buf, sizeof(buf));
    if (n > 0) out.append(buf, static_cast<size_t>(n));
    if (out.find('\n') != std::string::npos) break;
    ::usleep(10'000);
  }
  EXPECT_NE(out.find("\rsquares [------------------------------]   0/10    0%"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("3/10"), std::string::npos) << out;
  EXPECT_NE(out.find("\rsquares [##############################]  10/10  100%"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("10/10"), out.rfind("10/10")) << out;
}

std::timed_mutex g_user_lock;  // a lock of the user's, held by one of its threads
int TakeUserLock(int x) {
  if (!g_user_lock.try_lock_for(std::chrono::seconds(5))) return -1;
  g_user_lock.unlock();
  return x;
}
int g_fork_global = 0;
int ReadInit2(int) { return g_fork_global; }

// Under fork, a replacement worker is a copy of the zygote (made with the pool, before its
// thread), not of the threaded owner now: a user lock another thread holds at replacement time
// is free in the replacement, and the capturing initializer ran in it.
TEST(PoolForkTest, ReplacementWorkersComeFromTheZygote) {
  Pool::Options o;
  o.processes = 1;
  o.start_method = StartMethod::kFork;
  o.maxtasksperchild = 1;  // every task retires its worker: each later task needs a replacement
  const int value = 41;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool,
                       Pool::Create(o, [value] { g_fork_global = value + 1; }));
  mproc::testing::HeldOnAnotherThread held(g_user_lock);
  ASSERT_OK_AND_ASSIGN(std::vector<int> got,
                       pool->Map(TakeUserLock, std::vector<int>{1, 2, 3}, 1));
  EXPECT_EQ(got, (std::vector<int>{1, 2, 3}));  // not -1: no replacement inherited the lock
  ASSERT_OK_AND_ASSIGN(std::vector<int> inits, pool->Map(ReadInit2, std::vector<int>{0, 0}, 1));
  EXPECT_EQ(inits, (std::vector<int>{42, 42}));
}

}  // namespace
}  // namespace mproc
