#include "sync/value.h"

#include <fcntl.h>
#include <unistd.h>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/test_util.h"

namespace mproc {
namespace {

using testing::Child;
using testing::Join;

struct Point {
  int32_t x, y;
  double w;
};

TEST(ValueTest, InitialValuesAndChildWritesAreVisible) {
  ASSERT_OK_AND_ASSIGN(Value<int32_t> i, Value<int32_t>::Create(-7));
  ASSERT_OK_AND_ASSIGN(Value<double> d, Value<double>::Create(2.5));
  ASSERT_OK_AND_ASSIGN(Value<char> c, Value<char>::Create('x'));
  ASSERT_OK_AND_ASSIGN(Value<Point> p, Value<Point>::Create(Point{1, 2, 0.5}));
  EXPECT_EQ(i.Get(), -7);
  EXPECT_EQ(d.Get(), 2.5);
  EXPECT_EQ(c.Get(), 'x');
  EXPECT_EQ(p.Get().y, 2);
  EXPECT_EQ(Join(Child([&] {
              i.Set(1234);
              d.Set(-1.25);
              c.Set('z');
              p.Set(Point{9, 8, 7.5});
              return 0;
            })),
            0);
  EXPECT_EQ(i.Get(), 1234);
  EXPECT_EQ(d.Get(), -1.25);
  EXPECT_EQ(c.Get(), 'z');
  EXPECT_EQ(p.Get().w, 7.5);
}

TEST(ValueTest, LockModes) {
  ASSERT_OK_AND_ASSIGN(Value<int> locked, Value<int>::Create(0));
  EXPECT_TRUE(locked.HasLock());
  EXPECT_TRUE(locked.GetLock().Acquire());
  EXPECT_TRUE(locked.GetLock().Acquire());  // an RLock, as CPython's default
  MPROC_EXPECT_OK(locked.GetLock().Release());
  MPROC_EXPECT_OK(locked.GetLock().Release());
  ASSERT_OK_AND_ASSIGN(Value<int> raw, Value<int>::Create(0, LockMode::kNone));
  EXPECT_FALSE(raw.HasLock());
}

TEST(ValueTest, IncrementsUnderTheLockFromManyProcesses) {
  ASSERT_OK_AND_ASSIGN(Value<int64_t> v, Value<int64_t>::Create(0));
  constexpr int kProcs = 4, kN = 10000;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pids.push_back(Child([&] {
      for (int i = 0; i < kN; ++i) {
        RLockGuard g(v.GetLock());
        v.Set(v.Get() + 1);
      }
      return 0;
    }));
  }
  for (pid_t pid : pids) EXPECT_EQ(Join(pid), 0);
  EXPECT_EQ(v.Get(), kProcs * kN);
}

TEST(ValueTest, AtomicOperationsWithoutALock) {
  ASSERT_OK_AND_ASSIGN(Value<uint32_t> v, Value<uint32_t>::Create(0, LockMode::kNone));
  std::vector<pid_t> pids;
  for (int p = 0; p < 3; ++p) {
    pids.push_back(Child([&] {
      for (int i = 0; i < 10000; ++i) v.FetchAdd(1);
      return 0;
    }));
  }
  for (pid_t pid : pids) EXPECT_EQ(Join(pid), 0);
  EXPECT_EQ(v.Load(), 30000u);
  uint32_t expected = 30000;
  EXPECT_TRUE(v.CompareExchange(expected, 5));
  EXPECT_EQ(v.Load(), 5u);
}

TEST(ArrayTest, FromABracedListAndGuardedByItsLock) {
  ASSERT_OK_AND_ASSIGN(Array<int> a, Array<int>::Create({1, 2, 3}));
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[2], 3);
  ASSERT_OK_AND_ASSIGN(Array<int> one, Array<int>::Create({5}));  // the list {5}, not 5 zeros
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], 5);
  {
    LockGuard g(a.GetLock());
    a[0] = 10;
  }
  EXPECT_EQ(a[0], 10);
}

TEST(ArrayTest, ZeroFilledIndexingSlicingAndChildUpdates) {
  ASSERT_OK_AND_ASSIGN(Array<int32_t> a, Array<int32_t>::Create(10));
  EXPECT_EQ(a.size(), 10u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], 0);
  EXPECT_EQ(Join(Child([&] {
              for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int32_t>(i * i);
              return 0;
            })),
            0);
  EXPECT_EQ(a[9], 81);
  std::span<int32_t> s = a.Slice(2, 5);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0], 4);
  EXPECT_EQ(a.Slice(8, 100).size(), 2u);  // clamped
  EXPECT_TRUE(a.HasLock());
  std::vector<double> init = {1.5, 2.5};
  ASSERT_OK_AND_ASSIGN(Array<double> b, Array<double>::Create(std::span<const double>(init), LockMode::kNone));
  EXPECT_EQ(b[1], 2.5);
  EXPECT_FALSE(b.HasLock());
  EXPECT_THAT(Array<int>::Create(0), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace mproc

namespace mproc {
namespace {

TEST(HandleCodecTest, DecodedHandlesShareStateAndBadOnesAreRejected) {
  ASSERT_OK_AND_ASSIGN(Value<int64_t> v, Value<int64_t>::Create(5));
  EncodeBuffer b;
  Encode(v, b);
  std::vector<UniqueFd> fds;
  for (int fd : b.fds()) fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  ASSERT_OK_AND_ASSIGN(Value<int64_t> w, Decode<Value<int64_t>>(b.bytes(), std::move(fds)));
  w.Set(77);
  EXPECT_EQ(v.Get(), 77);  // same shared memory, another mapping
  EXPECT_TRUE(w.HasLock());

  // Decoding as another element type is refused.
  std::vector<UniqueFd> fds2;
  for (int fd : b.fds()) fds2.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  EXPECT_THAT(Decode<Value<int32_t>>(b.bytes(), std::move(fds2)),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("element size")));

  // An Array whose count exceeds its segment is refused.
  ASSERT_OK_AND_ASSIGN(Array<int64_t> a, Array<int64_t>::Create(4));
  EncodeBuffer ab;
  Encode(a, ab);
  std::string bytes(ab.view());
  // Layout: tag, fd index, offset, sizeof(T)=8, count=4, locked. Make the count 100000: 800 KB
  // of int64, past the end of the 256 KiB arena chunk the Array was carved from.
  size_t pos = bytes.size() - 2;
  ASSERT_EQ(bytes[pos], 4);
  bytes.replace(pos, 1, "\xa0\x8d\x06");
  std::vector<UniqueFd> fds3;
  for (int fd : ab.fds()) fds3.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  EXPECT_THAT(Decode<Array<int64_t>>(std::as_bytes(std::span(bytes.data(), bytes.size())),
                                     std::move(fds3)),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("count")));

  // A Lock handle without its descriptor is a clear error.
  ASSERT_OK_AND_ASSIGN(Lock lock, Lock::Create());
  EncodeBuffer lb;
  Encode(lock, lb);
  EXPECT_THAT(Decode<Lock>(lb.bytes()), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace mproc
