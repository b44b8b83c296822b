#include "pool/executor.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

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
  auto results = ex->Map(Square, std::vector<int>{1, 2, 3, 4});
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

TEST_F(ExecutorTest, CancelAndShutdownWithCancelFutures) {
  auto ex = Make(1);
  ASSERT_NE(ex, nullptr);
  // One worker, which holds a window of tasks: queue enough that some are still pending.
  std::vector<Future<int>> fs;
  for (int i = 0; i < 12; ++i) fs.push_back(ex->Submit(SleepMs, 100));
  ::usleep(50'000);  // the pool thread has handed the first tasks to the worker by now
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

TEST_F(ExecutorTest, TerminateWorkersEndsRunningTasks) {
  auto ex = Make();
  ASSERT_NE(ex, nullptr);
  Future<int> f = ex->Submit(SleepMs, 60'000);
  ::usleep(100'000);
  double t0 = testing::NowSeconds();
  MPROC_ASSERT_OK(ex->TerminateWorkers());
  EXPECT_LT(testing::NowSeconds() - t0, 10.0);
  EXPECT_THAT(f.Result(absl::Seconds(10)), StatusIs(absl::StatusCode::kAborted));
}

}  // namespace
}  // namespace mproc
