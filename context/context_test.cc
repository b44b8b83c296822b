#include "context/context.h"

#include <unistd.h>

#include <string>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

// Set in the test process before a child starts: a fork child sees it, a fresh image
// (spawn, or a fork server's child) does not.
int g_marker = 0;

// How this child started, as bits: 1 = it sees the parent's memory (fork), 2 = its kernel
// parent is `parent` (fork or spawn; a fork server's children are the server's).
int HowStarted(pid_t parent) { return (g_marker == 7 ? 1 : 0) | (::getppid() == parent ? 2 : 0); }

class ContextTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void SetUp() override { g_marker = 7; }
  void TearDown() override { ShutdownForkServer(); }
};

TEST_P(ContextTest, ProcessStartsWithTheContextsMethod) {
  Context ctx = GetContext(GetParam());
  EXPECT_EQ(ctx.start_method(), GetParam());
  Process p = ctx.Process(HowStarted, ::getpid());
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(30)));
  ASSERT_TRUE(p.exitcode().has_value());
  switch (GetParam()) {
    case StartMethod::kFork: EXPECT_EQ(*p.exitcode(), 3); break;
    case StartMethod::kSpawn: EXPECT_EQ(*p.exitcode(), 2); break;
    case StartMethod::kForkServer: EXPECT_EQ(*p.exitcode(), 0); break;
  }
}

TEST_P(ContextTest, PoolWorkersStartWithTheContextsMethod) {
  Context ctx = GetContext(GetParam());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, ctx.Pool({.processes = 1}));
  ASSERT_OK_AND_ASSIGN(int how, pool->Apply(HowStarted, ::getpid()));
  switch (GetParam()) {
    // Fork pools fork their workers from a zygote made at Create: the parent's memory, but
    // not the parent's child.
    case StartMethod::kFork: EXPECT_EQ(how & 1, 1); break;
    case StartMethod::kSpawn: EXPECT_EQ(how, 2); break;
    case StartMethod::kForkServer: EXPECT_EQ(how, 0); break;
  }
}

TEST_P(ContextTest, ExecutorWorkersStartWithTheContextsMethod) {
  Context ctx = GetContext(GetParam());
  ASSERT_OK_AND_ASSIGN(auto ex, ctx.Executor({.max_workers = 1}));
  ASSERT_OK_AND_ASSIGN(int how, ex->Submit(HowStarted, ::getpid()).Result());
  EXPECT_EQ(how & 1, GetParam() == StartMethod::kFork ? 1 : 0);
}

void PutSquare(Queue<int> q, int x) { (void)q.Put(x * x); }

TEST_P(ContextTest, ObjectsFromTheContextWorkInItsChildren) {
  Context ctx = GetContext(GetParam());
  ASSERT_OK_AND_ASSIGN(Queue<int> q, ctx.Queue<int>());
  Process p = ctx.Process(PutSquare, q, 9);
  MPROC_ASSERT_OK(p.Start());
  EXPECT_THAT(q.Get(absl::Seconds(30)), IsOkAndHolds(81));
  MPROC_ASSERT_OK(p.Join(absl::Seconds(30)));
  ASSERT_OK_AND_ASSIGN(Value<int> v, ctx.Value<int>(5));
  EXPECT_EQ(v.Get(), 5);
  ASSERT_OK_AND_ASSIGN(Array<int> a, ctx.Array<int>({1, 2, 3}));
  EXPECT_EQ(a.size(), 3u);
  MPROC_EXPECT_OK(ctx.Lock().status());
  MPROC_EXPECT_OK(ctx.Barrier(2).status());
}

TEST_P(ContextTest, ManagerServesFromTheContextsMethod) {
  Context ctx = GetContext(GetParam());
  ASSERT_OK_AND_ASSIGN(auto m, ctx.Manager());
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
  MPROC_ASSERT_OK(d.Set("k", 3));
  EXPECT_THAT(d.Get("k"), IsOkAndHolds(3));
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ContextTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

TEST(GetContextTest, ByNameAsCPython) {
  ASSERT_OK_AND_ASSIGN(Context spawn, GetContext("spawn"));
  EXPECT_EQ(spawn.start_method(), StartMethod::kSpawn);
  ASSERT_OK_AND_ASSIGN(Context fork, GetContext("fork"));
  EXPECT_EQ(fork.start_method(), StartMethod::kFork);
  ASSERT_OK_AND_ASSIGN(Context fs, GetContext("forkserver"));
  EXPECT_EQ(fs.start_method(), StartMethod::kForkServer);
  EXPECT_THAT(GetContext("thread").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot find context for 'thread'")));
  EXPECT_THAT(GetContext("").status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GetContextTest, WithoutAMethodItIsTheProcessWideOne) {
  EXPECT_EQ(GetContext().start_method(), GetStartMethod());
}

TEST(GetContextTest, OptionsNamingAnotherMethodAreRefused) {
  Context ctx = GetContext(StartMethod::kSpawn);
  EXPECT_THAT(ctx.Pool({.processes = 1, .start_method = StartMethod::kFork}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fork' in a 'spawn' context")));
  EXPECT_THAT(ctx.Executor({.max_workers = 1, .start_method = StartMethod::kFork}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ManagerOptions mo;
  mo.start_method = StartMethod::kForkServer;
  EXPECT_THAT(ctx.Manager(mo).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  // The same method as the context's is fine.
  EXPECT_TRUE(ctx.Pool({.processes = 1, .start_method = StartMethod::kSpawn}).ok());
}

}  // namespace
}  // namespace mproc
