#include "shm/arena.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(ArenaTest, AllocationsAreDisjointAlignedAndZeroed) {
  ASSERT_OK_AND_ASSIGN(Arena a, Arena::Create(1 << 16));
  std::vector<std::pair<uint64_t, size_t>> blocks;
  for (size_t align : {16, 64, 256, 4096}) {
    for (size_t size : {1, 24, 100}) {
      ASSERT_OK_AND_ASSIGN(uint64_t off, a.Allocate(size, align));
      EXPECT_EQ(reinterpret_cast<uintptr_t>(a.At<char>(off)) % align, 0u) << align;
      for (size_t i = 0; i < size; ++i) EXPECT_EQ(a.At<char>(off)[i], 0);
      std::memset(a.At<char>(off), 0x5a, size);
      blocks.push_back({off, size});
    }
  }
  std::sort(blocks.begin(), blocks.end());
  for (size_t i = 1; i < blocks.size(); ++i) {
    EXPECT_GE(blocks[i].first, blocks[i - 1].first + blocks[i - 1].second);
  }
}

TEST(ArenaTest, FreeCoalescesBackToOneBlockAndReusedMemoryIsZeroed) {
  ASSERT_OK_AND_ASSIGN(Arena a, Arena::Create(1 << 16));
  const size_t initial = a.FreeBytes();
  EXPECT_EQ(a.LargestFreeBlock(), initial);
  std::mt19937 rng(7);
  std::vector<uint64_t> live;
  for (int round = 0; round < 2000; ++round) {
    if (live.empty() || rng() % 3 != 0) {
      absl::StatusOr<uint64_t> off = a.Allocate(1 + rng() % 500, size_t{16} << (rng() % 3));
      if (off.ok()) {
        std::memset(a.At<char>(*off), 0x77, 1);
        live.push_back(*off);
      }
    } else {
      size_t i = rng() % live.size();
      a.Free(live[i]);
      live.erase(live.begin() + static_cast<long>(i));
    }
  }
  for (uint64_t off : live) a.Free(off);
  EXPECT_EQ(a.FreeBytes(), initial);
  EXPECT_EQ(a.LargestFreeBlock(), initial);
  ASSERT_OK_AND_ASSIGN(uint64_t off, a.Allocate(1000));
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a.At<char>(off)[i], 0);
}

TEST(ArenaTest, ExhaustionIsAClearStatus) {
  ASSERT_OK_AND_ASSIGN(Arena a, Arena::Create(4096));
  EXPECT_THAT(a.Allocate(8192), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(a.Allocate(16, 3), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ArenaTest, ProcessesShareOneArena) {
  ASSERT_OK_AND_ASSIGN(Arena a, Arena::Create(1 << 16));
  ASSERT_OK_AND_ASSIGN(uint64_t parent_off, a.Allocate(64));
  std::strcpy(a.At<char>(parent_off), "from parent");
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  pid_t pid = testing::Child([&] {
    ::close(p[0]);
    absl::StatusOr<uint64_t> off = a.Allocate(64);
    if (!off.ok() || *off == parent_off) return 1;
    std::strcpy(a.At<char>(*off), "from child");
    uint64_t v = *off;
    return ::write(p[1], &v, sizeof v) == sizeof v ? 0 : 2;
  });
  ::close(p[1]);
  uint64_t child_off = 0;
  ASSERT_EQ(::read(p[0], &child_off, sizeof child_off), static_cast<ssize_t>(sizeof child_off));
  ::close(p[0]);
  ASSERT_EQ(testing::Join(pid), 0);
  EXPECT_STREQ(a.At<char>(child_off), "from child");
  // Attach from the segment's descriptor, as a spawned child would.
  ASSERT_OK_AND_ASSIGN(Segment dup, a.segment().Duplicate());
  ASSERT_OK_AND_ASSIGN(Arena b, Arena::Attach(std::move(dup)));
  EXPECT_STREQ(b.At<char>(parent_off), "from parent");
}

}  // namespace
}  // namespace mproc
