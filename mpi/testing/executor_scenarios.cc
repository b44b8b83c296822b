// The MpiExecutor's parity cases, run under `mpirun -n 3` by mpi/executor_test.cc: rank 0 runs
// these tests, ranks 1 and 2 serve them (inside MpiInit) and never see gtest. Each test
// creates its own executor over the same two worker ranks.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/code_ref.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mpi/executor.h"
#include "pool/internal/orphans.h"

namespace mproc {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

int Square(int x) { return x * x; }
int SleepMs(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}
int Throws(int) { throw std::runtime_error("mpi task failed"); }
int Pid(int) { return ::getpid(); }
int ThrowsOnOdd(int x) {
  if (x % 2) throw std::runtime_error("odd item");
  return x;
}
std::string Repeat(std::string s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}
size_t Length(std::string s) { return s.size(); }
std::string Big(int bytes) { return std::string(static_cast<size_t>(bytes), 'x'); }
void Nothing(int) {}
int32_t g_init_value = 0;
void InitWorker(int32_t value, std::string why) {
  if (!why.empty()) throw std::runtime_error(why);
  g_init_value = value;
}
int ReadInitValue(int) { return g_init_value; }

std::unique_ptr<MpiExecutor> Make(MpiExecutorOptions o = {}) {
  absl::StatusOr<std::unique_ptr<MpiExecutor>> ex = MpiExecutor::Create(o);
  EXPECT_TRUE(ex.ok()) << ex.status();
  return ex.ok() ? *std::move(ex) : nullptr;
}

TEST(MpiExecutorTest, HandshakeNamesEachWorkerRank) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  ASSERT_EQ(ex->max_workers(), 2);
  std::set<int> ranks;
  for (const MpiWorker& w : ex->Workers()) {
    ranks.insert(w.rank);
    EXPECT_NE(w.pid, ::getpid());
    EXPECT_FALSE(w.host.empty());
    EXPECT_EQ(w.object, MainObjectId());
  }
  EXPECT_EQ(ranks, (std::set<int>{1, 2}));
}

TEST(MpiExecutorTest, SubmitResultExceptionDone) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  Future<int> f = ex->Submit(Square, 9);
  EXPECT_THAT(f.Result(absl::Seconds(30)), IsOkAndHolds(81));
  EXPECT_TRUE(f.Done());
  MPROC_EXPECT_OK(f.Exception());
  Future<int> bad = ex->Submit(Throws, 1);
  EXPECT_THAT(bad.Exception(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("mpi task failed")));
  Future<int> slow = ex->Submit(SleepMs, 300);
  EXPECT_THAT(slow.Result(absl::Milliseconds(10)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(slow.Result(), IsOkAndHolds(300));
  EXPECT_THAT(ex->Submit(Repeat, std::string("ab"), 3).Result(), IsOkAndHolds("ababab"));
  MPROC_EXPECT_OK(ex->Submit(Nothing, 1).Result().status());
}

TEST(MpiExecutorTest, TasksRunOnTheWorkerRanksAndSpreadOverThem) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  std::set<int> expected;
  for (const MpiWorker& w : ex->Workers()) expected.insert(w.pid);
  std::vector<Future<int>> fs;
  for (int i = 0; i < 8; ++i) fs.push_back(ex->Submit(SleepMs, 50));
  for (auto& f : fs) ASSERT_THAT(f.Result(absl::Seconds(30)), IsOkAndHolds(50));
  ASSERT_OK_AND_ASSIGN(auto pids, ex->Map(Pid, std::vector<int>(40, 0)));
  std::set<int> seen;
  for (auto& p : pids) {
    ASSERT_TRUE(p.ok()) << p.status();
    seen.insert(*p);
  }
  for (int p : seen) EXPECT_TRUE(expected.count(p)) << "task ran in pid " << p;
  EXPECT_FALSE(seen.count(::getpid()));
}

TEST(MpiExecutorTest, MapKeepsOrderHonoursChunksizeAndReportsEachItem) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  std::vector<int> in(1000);
  for (int i = 0; i < 1000; ++i) in[i] = i;
  for (size_t chunk : {size_t{1}, size_t{7}, size_t{1000}}) {
    ASSERT_OK_AND_ASSIGN(auto r, ex->Map(Square, in, chunk));
    ASSERT_EQ(r.size(), 1000u);
    for (int i = 0; i < 1000; ++i) ASSERT_THAT(r[i], IsOkAndHolds(i * i)) << "chunk " << chunk;
  }
  ASSERT_OK_AND_ASSIGN(auto one, ex->Map(Pid, std::vector<int>(10, 0), /*chunksize=*/10));
  for (auto& p : one) EXPECT_THAT(p, IsOkAndHolds(*one[0]));  // one task: one rank
  std::vector<int> ten(10);
  for (int i = 0; i < 10; ++i) ten[i] = i;
  ASSERT_OK_AND_ASSIGN(auto mixed, ex->Map(ThrowsOnOdd, ten, /*chunksize=*/3));
  for (int i = 0; i < 10; ++i) {
    if (i % 2) {
      EXPECT_THAT(mixed[i], StatusIs(absl::StatusCode::kAborted, HasSubstr("odd item")));
    } else {
      EXPECT_THAT(mixed[i], IsOkAndHolds(i));
    }
  }
  EXPECT_THAT(ex->Map(Square, ten, /*chunksize=*/0).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("chunksize")));
  ExecutorMapOptions zero;
  zero.buffersize = 0;
  EXPECT_THAT(ex->Map(Square, ten, zero).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("buffersize")));
  ExecutorMapOptions window;
  window.buffersize = 2;
  window.chunksize = 3;
  ASSERT_OK_AND_ASSIGN(auto windowed, ex->Map(Square, in, window));
  for (int i = 0; i < 1000; ++i) ASSERT_THAT(windowed[i], IsOkAndHolds(i * i));
}

TEST(MpiExecutorTest, MapTimeoutEndsTheCall) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  ExecutorMapOptions o;
  o.timeout = absl::Milliseconds(300);
  ASSERT_OK_AND_ASSIGN(auto r, ex->Map(SleepMs, std::vector<int>{1, 3000, 3000, 1, 1, 1}, o));
  ASSERT_EQ(r.size(), 6u);
  EXPECT_THAT(r[0], IsOkAndHolds(1));
  for (int i = 1; i < 6; ++i) EXPECT_THAT(r[i], StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(MpiExecutorTest, WaitAsCompletedAndDoneCallbacks) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  std::vector<Future<int>> fs = {ex->Submit(SleepMs, 400), ex->Submit(SleepMs, 10)};
  auto [done, not_done] = WaitFutures(fs, absl::Seconds(30), ReturnWhen::kFirstCompleted);
  EXPECT_EQ(done, std::vector<size_t>{1});
  EXPECT_EQ(not_done, std::vector<size_t>{0});
  EXPECT_EQ(AsCompleted(fs, absl::Seconds(30)), (std::vector<size_t>{1, 0}));
  std::mutex mu;
  std::vector<std::string> seen;
  Future<int> f = ex->Submit(SleepMs, 100);
  f.AddDoneCallback([&](const Future<int>& g) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(absl::StrCat("first ", *g.Result(absl::Seconds(1))));
  });
  f.AddDoneCallback([](const Future<int>&) { throw std::runtime_error("from a callback"); });
  f.AddDoneCallback([&](const Future<int>& g) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(absl::StrCat("third ", *g.Result(absl::Seconds(1))));
  });
  ASSERT_THAT(f.Result(absl::Seconds(30)), IsOkAndHolds(100));
  MPROC_ASSERT_OK(ex->Shutdown(/*wait=*/true));  // the callbacks ran on the engine thread
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(seen, (std::vector<std::string>{"first 100", "third 100"}));
}

// An executor dropped from one of its own done callbacks: it cannot wait for itself, so it
// finishes the tasks queued and out, releases the workers and frees itself; its futures
// complete as usual, and the next executor can then be created on the same ranks. Before:
// std::terminate (the destructor joined its own thread). Callbacks run on the engine thread,
// whether nobody waits (the first round) or a waiter in Result runs the engine's turns (the
// second, Engine::Drive: the waiter completes the future and hands its callbacks over).
TEST(MpiExecutorTest, AnExecutorDroppedFromItsOwnDoneCallbackFinishesItsWork) {
  for (const bool waiter_drives : {false, true}) {
    SCOPED_TRACE(waiter_drives ? "a waiter drives" : "the engine thread runs the callback");
    std::unique_ptr<MpiExecutor> ex = Make();
    ASSERT_NE(ex, nullptr);
    const std::thread::id me = std::this_thread::get_id();
    std::atomic<bool> dropped{false};
    std::atomic<bool> on_waiter{false};
    std::vector<Future<int>> fs;
    fs.push_back(ex->Submit(SleepMs, 200));
    for (int i = 1; i <= 8; ++i) fs.push_back(ex->Submit(SleepMs, 50 + i));
    fs[0].AddDoneCallback([&](const Future<int>&) {
      on_waiter = std::this_thread::get_id() == me;
      ex.reset();
      dropped = true;
    });
    if (waiter_drives) {
      EXPECT_THAT(fs[0].Result(absl::Seconds(30)), IsOkAndHolds(200));
    } else {
      for (int i = 0; i < 30000 && !fs[0].Done(); ++i) ::usleep(1000);
    }
    for (int i = 1; i <= 8; ++i) {
      EXPECT_THAT(fs[i].Result(absl::Seconds(30)), IsOkAndHolds(50 + i));
    }
    for (int i = 0; i < 3000 && !dropped.load(); ++i) ::usleep(1000);
    EXPECT_TRUE(dropped.load());
    EXPECT_FALSE(on_waiter.load());
    pool_internal::WaitForOrphans();
    std::unique_ptr<MpiExecutor> next = Make();
    ASSERT_NE(next, nullptr);
    EXPECT_THAT(next->Submit(Square, 6).Result(absl::Seconds(30)), IsOkAndHolds(36));
    // A task nobody waits on, submitted after a waiter drove, is still sent and answered
    // (the engine thread looks again within a millisecond while parked).
    Future<int> unwatched = next->Submit(Square, 7);
    for (int i = 0; i < 30000 && !unwatched.Done(); ++i) ::usleep(100);
    EXPECT_THAT(unwatched.Result(absl::ZeroDuration()), IsOkAndHolds(49));
  }
}

// A waiter runs the engine's turns (Engine::Drive), and a turn takes every answer that came;
// the done callbacks of the futures it completes still run on the engine thread, never on the
// waiter, which may hold the locks they take.
TEST(MpiExecutorTest, DoneCallbacksNeverRunOnAWaitingThread) {
  std::unique_ptr<MpiExecutor> ex = Make();
  ASSERT_NE(ex, nullptr);
  const std::thread::id me = std::this_thread::get_id();
  std::mutex held_by_the_waiter;
  std::atomic<int> ran{0};
  std::atomic<bool> on_waiter{false};
  std::vector<Future<int>> fs;
  for (int i = 0; i < 4; ++i) fs.push_back(ex->Submit(SleepMs, 100));
  for (Future<int>& f : fs) {
    f.AddDoneCallback([&](const Future<int>&) {
      if (std::this_thread::get_id() == me) on_waiter = true;
      std::lock_guard<std::mutex> lock(held_by_the_waiter);
      ++ran;
    });
  }
  {
    std::lock_guard<std::mutex> lock(held_by_the_waiter);
    for (Future<int>& f : fs) EXPECT_THAT(f.Result(absl::Seconds(30)), IsOkAndHolds(100));
  }
  for (int i = 0; i < 3000 && ran.load() < 4; ++i) ::usleep(1000);
  EXPECT_EQ(ran.load(), 4);
  EXPECT_FALSE(on_waiter.load());
}

// CPU seconds (user + system) a process on this host has used, from /proc/<pid>/stat.
double CpuSeconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 3.. after "pid (comm)"
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Worker ranks with no executor open wait without burning a CPU each (they polled MPI flat
// out before, a CPU per idle rank taken from the rank 0 program); the next executor still
// reaches them (its handshake waits a millisecond at most).
TEST(MpiExecutorTest, IdleWorkerRanksCostNoCpuBetweenExecutors) {
  std::vector<pid_t> pids;
  {
    auto ex = Make();
    ASSERT_NE(ex, nullptr);
    for (const MpiWorker& w : ex->Workers()) pids.push_back(w.pid);
    EXPECT_THAT(ex->Submit(Square, 3).Result(absl::Seconds(30)), IsOkAndHolds(9));
  }
  ::usleep(100'000);  // past their spin before sleeping
  std::vector<double> before;
  for (pid_t p : pids) before.push_back(CpuSeconds(p));
  ::usleep(1'000'000);
  for (size_t i = 0; i < pids.size(); ++i) {
    const double used = CpuSeconds(pids[i]) - before[i];
    EXPECT_GE(before[i], 0) << "cannot read /proc for pid " << pids[i];
    EXPECT_LT(used, 0.2) << "idle worker pid " << pids[i] << " used " << used
                         << " s of CPU in 1 s";
  }
  auto next = Make();
  ASSERT_NE(next, nullptr);
  EXPECT_THAT(next->Submit(Square, 4).Result(absl::Seconds(30)), IsOkAndHolds(16));
}

TEST(MpiExecutorTest, CancelAndShutdownWithCancelFutures) {
  MpiExecutorOptions o;
  o.tasks_per_rank = 1;
  auto ex = Make(o);
  ASSERT_NE(ex, nullptr);
  std::vector<Future<int>> fs;
  for (int i = 0; i < 12; ++i) fs.push_back(ex->Submit(SleepMs, 100));
  EXPECT_TRUE(fs.back().Cancel());
  EXPECT_TRUE(fs.back().Cancelled());
  EXPECT_THAT(fs.back().Result(), StatusIs(absl::StatusCode::kCancelled));
  ASSERT_THAT(fs.front().Result(absl::Seconds(30)), IsOkAndHolds(100));
  EXPECT_FALSE(fs.front().Cancel());  // done
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
  EXPECT_THAT(ex->Submit(Square, 1).Result(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Shutdown")));
}

TEST(MpiExecutorTest, ShutdownWithWaitFromADoneCallbackDoesNotJoinItself) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  MpiExecutor* raw = ex.get();
  std::atomic<int> code{-1};
  Future<int> f = ex->Submit(SleepMs, 50);
  f.AddDoneCallback(
      [&](const Future<int>&) { code = static_cast<int>(raw->Shutdown(/*wait=*/true).code()); });
  ASSERT_THAT(f.Result(absl::Seconds(30)), IsOkAndHolds(50));
  for (int i = 0; i < 3000 && code.load() < 0; ++i) ::usleep(1000);
  EXPECT_EQ(code.load(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  MPROC_EXPECT_OK(ex->Shutdown(/*wait=*/true));
}

// The message limit is checked before anything is sent or allocated: a task above it is
// refused at Submit, a result above it fails its Future (the worker checks it before sending),
// and the executor goes on.
TEST(MpiExecutorTest, MessagesAboveTheLimitAreRefusedAndTheExecutorGoesOn) {
  MpiExecutorOptions o;
  o.max_message_bytes = 4096;
  auto ex = Make(o);
  ASSERT_NE(ex, nullptr);
  EXPECT_THAT(ex->Submit(Length, std::string(8192, 'a')).Result(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit of 4096")));
  EXPECT_THAT(ex->Submit(Big, 8192).Result(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit of 4096")));
  EXPECT_THAT(ex->Submit(Big, 100).Result(absl::Seconds(30)), IsOkAndHolds(std::string(100, 'x')));
  EXPECT_THAT(ex->Submit(Length, std::string(1000, 'a')).Result(absl::Seconds(30)),
              IsOkAndHolds(1000u));
  MpiExecutorOptions bad;
  bad.max_message_bytes = 1;
  EXPECT_THAT(MpiExecutor::Create(bad).status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MpiExecutorTest, LargeMessagesWithinTheLimitArriveWhole) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  const std::string big(8 << 20, 'q');
  EXPECT_THAT(ex->Submit(Length, big).Result(absl::Seconds(60)), IsOkAndHolds(big.size()));
  ASSERT_OK_AND_ASSIGN(std::string back, ex->Submit(Big, 8 << 20).Result(absl::Seconds(60)));
  EXPECT_EQ(back, std::string(8 << 20, 'x'));
}

TEST(MpiExecutorTest, OneExecutorAtATimeOverTheLaunchsWorkers) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  EXPECT_THAT(MpiExecutor::Create().status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("still open")));
  MPROC_ASSERT_OK(ex->Shutdown());
  ex.reset();
  auto again = Make();
  ASSERT_NE(again, nullptr);
  EXPECT_THAT(again->Submit(Square, 5).Result(absl::Seconds(30)), IsOkAndHolds(25));
  MpiExecutorOptions spawn;
  spawn.spawn_workers = 1;
  again.reset();
  EXPECT_THAT(MpiExecutor::Create(spawn).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("singleton")));
}

// The initializer runs in every worker before its first task, for each executor; one that
// throws breaks that executor (every Future fails, naming the rank), and the next is fine.
TEST(MpiExecutorTest, InitializerRunsInEveryWorkerAndItsFailureBreaksTheExecutor) {
  for (int32_t value : {7, 11}) {
    ASSERT_OK_AND_ASSIGN(auto ex, MpiExecutor::Create({}, InitWorker, value, std::string()));
    ASSERT_OK_AND_ASSIGN(auto seen, ex->Map(ReadInitValue, std::vector<int>(20, 0)));
    for (auto& v : seen) EXPECT_THAT(v, IsOkAndHolds(value));
  }
  ASSERT_OK_AND_ASSIGN(auto broken,
                       MpiExecutor::Create({}, InitWorker, 1, std::string("no database")));
  EXPECT_THAT(broken->Submit(Square, 2).Result(absl::Seconds(30)),
              StatusIs(absl::StatusCode::kAborted,
                       AllOf(HasSubstr("initializer failed on rank "), HasSubstr("no database"))));
  broken.reset();
  // An initializer is checked against the message limit before anything is sent.
  MpiExecutorOptions small;
  small.max_message_bytes = 4096;
  EXPECT_THAT(MpiExecutor::Create(small, InitWorker, 1, std::string(8000, 'x')).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("initializer")));
  auto fine = Make();
  ASSERT_NE(fine, nullptr);
  EXPECT_THAT(fine->Submit(Square, 3).Result(absl::Seconds(30)), IsOkAndHolds(9));
}

// A task longer than the heartbeat timeout is not a lost rank: the worker sends heartbeats
// while it runs one.
TEST(MpiExecutorTest, LongTasksAreKeptAliveByHeartbeats) {
  MpiExecutorOptions o;
  o.heartbeat_timeout = absl::Seconds(1);
  auto ex = Make(o);
  ASSERT_NE(ex, nullptr);
  for (const MpiWorker& w : ex->Workers()) EXPECT_TRUE(w.beats) << "rank " << w.rank;
  std::vector<Future<int>> fs = {ex->Submit(SleepMs, 2500), ex->Submit(SleepMs, 2500),
                                 ex->Submit(SleepMs, 100)};
  for (auto& f : fs) EXPECT_TRUE(f.Result(absl::Seconds(30)).ok()) << f.Exception();
  ex.reset();
  for (absl::Duration bad_timeout : {absl::ZeroDuration(), absl::Milliseconds(10)}) {
    MpiExecutorOptions bad;
    bad.heartbeat_timeout = bad_timeout;
    EXPECT_THAT(MpiExecutor::Create(bad).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("heartbeat_timeout")));
  }
}

// A handshake that times out leaves the workers' replies behind on the launch's
// communicator: the next executor drops them (they carry the old session) and works.
TEST(MpiExecutorTest, RepliesLeftByAFailedHandshakeDoNotReachTheNextExecutor) {
  MpiExecutorOptions hurried;
  hurried.handshake_timeout = absl::Nanoseconds(1);
  EXPECT_THAT(MpiExecutor::Create(hurried).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("did not answer")));
  MpiExecutorOptions zero;
  zero.handshake_timeout = absl::ZeroDuration();
  EXPECT_THAT(MpiExecutor::Create(zero).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("handshake_timeout")));
  for (int round = 0; round < 2; ++round) {
    auto ex = Make();
    ASSERT_NE(ex, nullptr);
    ASSERT_OK_AND_ASSIGN(auto r, ex->Map(Square, std::vector<int>{1, 2, 3, 4, 5, 6}));
    for (int i = 0; i < 6; ++i) EXPECT_THAT(r[i], IsOkAndHolds((i + 1) * (i + 1)));
  }
}

// Executors one after another over the same workers: each one's Futures are done once it is
// destroyed (Shutdown waits for every answer), hold their own results (ids are unique in the
// process, so no answer is taken for another executor's task), and Cancel on them only
// reports, never reaching the destroyed executor.
TEST(MpiExecutorTest, TaskIdsNeverRepeatAcrossExecutors) {
  std::set<int> seen;
  for (int round = 0; round < 3; ++round) {
    auto ex = Make();
    ASSERT_NE(ex, nullptr);
    std::vector<Future<int>> fs;
    for (int i = 0; i < 20; ++i) fs.push_back(ex->Submit(Square, round * 100 + i));
    ex.reset();  // Shutdown(wait=true): every answer is in
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(fs[i].Done());
      EXPECT_THAT(fs[i].Result(), IsOkAndHolds((round * 100 + i) * (round * 100 + i)));
      EXPECT_FALSE(fs[i].Cancel());  // done: never reaches the destroyed executor
    }
  }
}

}  // namespace
}  // namespace mproc

int main(int argc, char** argv) {
  if (absl::Status s = mproc::MpiInit(&argc, &argv); !s.ok()) {
    std::fprintf(stderr, "MpiInit: %s\n", s.ToString().c_str());
    return 2;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
