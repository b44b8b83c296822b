// A consumer's test through the short top-level names (@mproc//:pool, @mproc//:queue): a Pool
// maps in worker processes and a Queue carries the results back across a process boundary.
#include <vector>

#include "gtest/gtest.h"
#include "ipc/queue.h"
#include "pool/pool.h"
#include "spawn/process.h"

namespace {

int Square(int x) { return x * x; }

TEST(ConsumerPoolTest, MapThroughTheShortNames) {
  absl::StatusOr<std::unique_ptr<mproc::Pool>> pool = mproc::Pool::Create({.processes = 2});
  ASSERT_TRUE(pool.ok()) << pool.status();
  absl::StatusOr<std::vector<int>> squares = (*pool)->Map(Square, {1, 2, 3, 4});
  ASSERT_TRUE(squares.ok()) << squares.status();
  EXPECT_EQ(*squares, (std::vector<int>{1, 4, 9, 16}));
  auto q = mproc::Queue<int>::Create();
  ASSERT_TRUE(q.ok()) << q.status();
  for (int s : *squares) ASSERT_TRUE(q->Put(s).ok());
  for (int want : {1, 4, 9, 16}) {
    absl::StatusOr<int> got = q->Get(absl::Seconds(10));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want);
  }
  pool->reset();
  mproc::ShutdownForkServer();  // the default start method's server: the leak check counts it
}

}  // namespace
