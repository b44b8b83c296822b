#include "shm/arena.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "base/status.h"
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
      MPROC_ASSERT_OK(a.Free(live[i]));
      live.erase(live.begin() + static_cast<long>(i));
    }
  }
  for (uint64_t off : live) MPROC_ASSERT_OK(a.Free(off));
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

TEST(ArenaTest, AFreeOfWhatIsNotAllocatedIsRefused) {
  ASSERT_OK_AND_ASSIGN(Arena a, Arena::Create(1 << 16));
  ASSERT_OK_AND_ASSIGN(uint64_t x, a.Allocate(100));
  ASSERT_OK_AND_ASSIGN(uint64_t y, a.Allocate(100));
  const auto before = ArenaTesting::FreeList(a);
  EXPECT_THAT(a.Free(x + 16), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(a.Free(3), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(a.Free(uint64_t{1} << 40), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(ArenaTesting::FreeList(a), before);
  MPROC_ASSERT_OK(a.Free(x));
  const auto after_one = ArenaTesting::FreeList(a);
  EXPECT_THAT(a.Free(x), StatusIs(absl::StatusCode::kInvalidArgument));  // twice
  EXPECT_EQ(ArenaTesting::FreeList(a), after_one);
  MPROC_ASSERT_OK(a.Free(y));
  EXPECT_THAT(a.Free(y), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(ArenaTesting::FreeList(a).size(), 1u);
}

// Data inside a block that looks like a block header (a size, then the allocated marker) does
// not make its offset freeable: the block would otherwise be handed out again while in use.
TEST(ArenaTest, AHeaderLookAlikeInsideABlockIsNotFreeable) {
  ASSERT_OK_AND_ASSIGN(Arena a, Arena::Create(1 << 16));
  ASSERT_OK_AND_ASSIGN(uint64_t x, a.Allocate(200));
  ASSERT_OK_AND_ASSIGN(uint64_t y, a.Allocate(200));
  uint64_t* data = a.At<uint64_t>(x);
  data[4] = 48;           // at x + 32: a plausible size ...
  data[5] = ~uint64_t{0};  // ... and the allocated marker
  const auto before = ArenaTesting::FreeList(a);
  EXPECT_THAT(a.Free(x + 48), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(ArenaTesting::FreeList(a), before);
  MPROC_EXPECT_OK(a.Free(y));
  EXPECT_THAT(a.Free(x + 48), StatusIs(absl::StatusCode::kInvalidArgument));
  MPROC_EXPECT_OK(a.Free(x));
  EXPECT_EQ(ArenaTesting::FreeList(a).size(), 1u);
}

// Someone scribbled over the free list in shared memory: a link back to itself (a cycle) or
// out of the segment is refused with INVALID_ARGUMENT, never followed.
TEST(ArenaTest, ACorruptFreeListIsRefusedNotFollowed) {
  for (uint64_t bad : {uint64_t{0}, uint64_t{1} << 40, uint64_t{8}}) {
    ASSERT_OK_AND_ASSIGN(Arena a, Arena::Create(1 << 16));
    ASSERT_OK_AND_ASSIGN(uint64_t x, a.Allocate(64));
    ASSERT_OK_AND_ASSIGN(uint64_t y, a.Allocate(64));
    ASSERT_OK_AND_ASSIGN(uint64_t z, a.Allocate(64));
    MPROC_ASSERT_OK(a.Free(x));
    // The free block x's `next` word (a block's header is its size, then its next).
    uint64_t* next = a.At<uint64_t>(x - 8);
    *next = bad == 0 ? x - 16 : bad;  // 0: a link to itself
    SCOPED_TRACE(bad);
    EXPECT_THAT(a.Allocate(1000), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(a.Free(z), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_EQ(a.FreeBytes(), 80u);  // x's block alone: the walk stops at the bad link
    (void)y;
  }
}

// Each operation below, in a child killed (SIGKILL) at every point of its change in turn: the
// next call from another process takes the lock over from the dead child and finds the free
// list exactly as it was before the killed call; the call that ran to its end changed it.
TEST(ArenaTest, AHolderKilledAtEveryPointOfAChangeLeavesTheArenaAsBefore) {
  struct Op {
    const char* name;
    int frees;  // the index in `live` of the block it frees, or -1: it allocates
    size_t size = 0, align = 16;
  };
  const std::vector<Op> ops = {
      {"allocate, splitting a tail", -1, 40},
      {"allocate, splitting a front and a tail", -1, 40, 1024},
      {"allocate a whole block", -1, 200},
      {"free, coalescing with both neighbours", 2},
      {"free, with no free neighbour", 5},
  };
  // What it allocated (0: nothing), or an error.
  auto run = [](const Op& op, Arena& a, const std::vector<uint64_t>& live)
      -> absl::StatusOr<uint64_t> {
    if (op.frees < 0) return a.Allocate(op.size, op.align);
    MPROC_RETURN_IF_ERROR(a.Free(live[op.frees]));
    return 0;
  };
  // Where the child that finishes says what it allocated.
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  auto* allocated = static_cast<std::atomic<uint64_t>*>(page);
  for (const Op& op : ops) {
    SCOPED_TRACE(op.name);
    ASSERT_OK_AND_ASSIGN(Arena a, Arena::Create(1 << 16));
    // Blocks of 200 bytes (216 with the header); 1 and 3 freed: a fragmented list.
    std::vector<uint64_t> live;
    for (int i = 0; i < 8; ++i) {
      ASSERT_OK_AND_ASSIGN(uint64_t off, a.Allocate(200));
      live.push_back(off);
    }
    MPROC_ASSERT_OK(a.Free(live[1]));
    MPROC_ASSERT_OK(a.Free(live[3]));
    const auto before = ArenaTesting::FreeList(a);
    ASSERT_EQ(before.size(), 3u);
    int killed = 0;
    for (int point = 1;; ++point) {
      ASSERT_LT(point, 64) << "the operation never finished";
      const pid_t pid = testing::Child([&] {
        ArenaTesting::KillAtPoint(point);
        absl::StatusOr<uint64_t> r = run(op, a, live);
        if (!r.ok()) return 1;
        allocated->store(*r);
        return 0;
      });
      const int code = testing::Join(pid, 30);
      if (code == 128 + SIGKILL) {
        ++killed;
        EXPECT_EQ(ArenaTesting::FreeList(a), before) << "killed at point " << point;
        continue;
      }
      ASSERT_EQ(code, 0) << "at point " << point;
      EXPECT_NE(ArenaTesting::FreeList(a), before);
      break;
    }
    // Two points per word changed: every operation changes at least two words.
    EXPECT_GE(killed, 4);
    // Usable after all that: with everything freed, one block again.
    std::vector<uint64_t> held = {live[0], live[2], live[4], live[5], live[6], live[7]};
    if (op.frees >= 0) std::erase(held, live[op.frees]);
    if (allocated->load() != 0) held.push_back(allocated->load());
    allocated->store(0);
    for (uint64_t off : held) MPROC_EXPECT_OK(a.Free(off)) << off;
    EXPECT_EQ(ArenaTesting::FreeList(a).size(), 1u);
    EXPECT_EQ(a.LargestFreeBlock(), a.FreeBytes());
  }
  ::munmap(page, 4096);
}

}  // namespace
}  // namespace mproc
