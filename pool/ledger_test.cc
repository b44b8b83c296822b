// The pool's task ledger and assignment rules (pool/internal/ledger.h), without processes.
#include "pool/internal/ledger.h"

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc::pool_internal {
namespace {

using ::testing::ElementsAre;

struct Task {
  uint64_t id;
  size_t bytes;
};

// Assigns `pending` to `n` fresh-or-given ledgers; returns (worker, task id) in order.
std::vector<std::pair<size_t, uint64_t>> Assign(std::deque<Task>& pending,
                                                std::vector<TaskLedger>& ledgers,
                                                int maxtasksperchild = 0) {
  std::vector<TaskLedger*> ptrs;
  for (TaskLedger& l : ledgers) ptrs.push_back(&l);
  std::vector<std::pair<size_t, uint64_t>> out;
  AssignRoundRobin(
      pending, std::span<TaskLedger* const>(ptrs), maxtasksperchild,
      [](const Task& t) { return t.id; }, [](const Task& t) { return t.bytes; },
      [&](size_t wi, Task t) { out.emplace_back(wi, t.id); });
  return out;
}

std::deque<Task> Tasks(uint64_t n, size_t bytes = 100) {
  std::deque<Task> d;
  for (uint64_t i = 1; i <= n; ++i) d.push_back({i, bytes});
  return d;
}

std::vector<uint64_t> Held(const TaskLedger& l) {
  std::vector<uint64_t> ids;
  l.ForEachHeld([&](uint64_t id) { ids.push_back(id); });
  return ids;
}

TEST(LedgerTest, RoundRobinFillsEachWorkersWindowAndNoMore) {
  std::vector<TaskLedger> ledgers(2);
  std::deque<Task> pending = Tasks(11);
  auto got = Assign(pending, ledgers);
  // Round by round: one per worker per round, kWindow rounds.
  ASSERT_EQ(got.size(), 2 * kWindow);
  EXPECT_EQ(got[0], std::make_pair(size_t{0}, uint64_t{1}));
  EXPECT_EQ(got[1], std::make_pair(size_t{1}, uint64_t{2}));
  EXPECT_EQ(got[2], std::make_pair(size_t{0}, uint64_t{3}));
  EXPECT_THAT(Held(ledgers[0]), ElementsAre(1, 3, 5, 7));
  EXPECT_THAT(Held(ledgers[1]), ElementsAre(2, 4, 6, 8));
  EXPECT_EQ(pending.size(), 3u);  // 9, 10, 11 wait
  // An answer frees one slot: the next assignment fills exactly it.
  EXPECT_TRUE(ledgers[1].Complete(2));
  got = Assign(pending, ledgers);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], std::make_pair(size_t{1}, uint64_t{9}));
  EXPECT_THAT(Held(ledgers[1]), ElementsAre(4, 6, 8, 9));
}

TEST(LedgerTest, BehindOtherTasksOnlyWhileTheQueuedBytesStaySmall) {
  std::vector<TaskLedger> ledgers(1);
  // An idle worker takes a task of any size.
  std::deque<Task> pending = {{1, 10 * kWindowBytes}, {2, 10}};
  auto got = Assign(pending, ledgers);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(ledgers[0].queued_bytes(), 10 * kWindowBytes);
  ASSERT_TRUE(ledgers[0].Complete(1));
  EXPECT_EQ(ledgers[0].queued_bytes(), 0u);
  // Behind a task, a second goes only while both fit in kWindowBytes.
  pending = {{3, kWindowBytes / 2}, {4, kWindowBytes / 2}, {5, 1}};
  got = Assign(pending, ledgers);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_THAT(Held(ledgers[0]), ElementsAre(3, 4));
  EXPECT_EQ(pending.size(), 1u);
}

TEST(LedgerTest, MaxTasksPerChildBudgetAndRetirement) {
  std::vector<TaskLedger> ledgers(1);
  std::deque<Task> pending = Tasks(5);
  auto got = Assign(pending, ledgers, /*maxtasksperchild=*/2);
  EXPECT_EQ(got.size(), 2u);
  EXPECT_FALSE(ledgers[0].Retired(2));  // holds two
  ASSERT_TRUE(ledgers[0].Complete(1));
  // Budget spent: nothing more, even with room in the window.
  EXPECT_TRUE(Assign(pending, ledgers, 2).empty());
  EXPECT_FALSE(ledgers[0].Retired(2));  // still holds task 2
  ASSERT_TRUE(ledgers[0].Complete(2));
  EXPECT_TRUE(ledgers[0].Retired(2));
  EXPECT_FALSE(ledgers[0].Retired(0));  // no budget: never retires
  EXPECT_EQ(pending.size(), 3u);
}

TEST(LedgerTest, AFailedSendLeavesTheLedgerAndTheBudget) {
  std::vector<TaskLedger> ledgers(1);
  std::deque<Task> pending = Tasks(3);
  Assign(pending, ledgers, /*maxtasksperchild=*/3);
  EXPECT_EQ(ledgers[0].assigned(), 3);
  EXPECT_TRUE(ledgers[0].Unassign(2));
  EXPECT_FALSE(ledgers[0].Unassign(2));
  EXPECT_THAT(Held(ledgers[0]), ElementsAre(1, 3));
  EXPECT_EQ(ledgers[0].assigned(), 2);
  EXPECT_EQ(ledgers[0].queued_bytes(), 200u);
  pending = Tasks(1);
  pending.front().id = 9;
  EXPECT_EQ(Assign(pending, ledgers, 3).size(), 1u);  // the budget it gave back
}

// An answer for a task the ledger does not hold at its front (a cancelled task's late
// answer) counts as done and removes nothing.
TEST(LedgerTest, AnAnswerOutOfOrderRemovesNothing) {
  TaskLedger l;
  l.Assign(1, 10);
  l.Assign(2, 10);
  EXPECT_FALSE(l.Complete(2));
  EXPECT_THAT(Held(l), ElementsAre(1, 2));
  EXPECT_EQ(l.done(), 1);
  EXPECT_TRUE(l.Complete(1));
  EXPECT_TRUE(l.Complete(2));
  EXPECT_TRUE(l.empty());
}

}  // namespace
}  // namespace mproc::pool_internal
