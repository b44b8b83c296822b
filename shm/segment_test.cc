#include "shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

TEST(SegmentTest, CreateMapWriteRead) {
  ASSERT_OK_AND_ASSIGN(Segment s, Segment::Create(1 << 20, "test-seg"));
  EXPECT_EQ(s.size(), 1u << 20);
  ASSERT_OK_AND_ASSIGN(Mapping a, s.Map());
  ASSERT_OK_AND_ASSIGN(Mapping b, s.Map());
  std::memcpy(a.data(), "shared", 7);
  EXPECT_STREQ(static_cast<const char*>(b.data()), "shared");  // two views, one region
  EXPECT_TRUE(::fcntl(s.fd(), F_GETFD) & FD_CLOEXEC);
}

TEST(SegmentTest, ZeroSizeIsRejected) {
  EXPECT_THAT(Segment::Create(0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("positive")));
}

TEST(SegmentTest, SealedAgainstShrinkingAndGrowing) {
  ASSERT_OK_AND_ASSIGN(Segment s, Segment::Create(8192));
  EXPECT_EQ(::ftruncate(s.fd(), 4096), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(s.fd(), 1 << 20), -1);
  int seals = ::fcntl(s.fd(), F_GET_SEALS);
  EXPECT_TRUE(seals & F_SEAL_SHRINK);
  EXPECT_TRUE(seals & F_SEAL_GROW);
  EXPECT_TRUE(seals & F_SEAL_SEAL);  // and nobody can change the seals
}

TEST(SegmentTest, AForkChildSeesAndWritesTheSameMemory) {
  ASSERT_OK_AND_ASSIGN(Segment s, Segment::Create(4096));
  ASSERT_OK_AND_ASSIGN(Mapping m, s.Map());
  auto* p = static_cast<volatile int*>(m.data());
  p[0] = 41;
  pid_t pid = testing::Child([&] {
    p[1] = p[0] + 1;
    return 0;
  });
  EXPECT_EQ(testing::Join(pid), 0);
  EXPECT_EQ(p[1], 42);
}

TEST(SegmentTest, FromFdAdoptsAReceivedDescriptorAndRefusesUnsealedOnes) {
  ASSERT_OK_AND_ASSIGN(Segment s, Segment::Create(4096));
  ASSERT_OK_AND_ASSIGN(Segment d, s.Duplicate());
  ASSERT_OK_AND_ASSIGN(Segment adopted, Segment::FromFd(UniqueFd(::fcntl(d.fd(), F_DUPFD_CLOEXEC, 0))));
  EXPECT_EQ(adopted.size(), 4096u);
  UniqueFd plain(::memfd_create("plain", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(plain.get(), 4096), 0);
  EXPECT_THAT(Segment::FromFd(std::move(plain)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sealed")));
}

TEST(SegmentTest, OneGibibyteSegmentWorks) {
  const size_t size = size_t{1} << 30;
  ASSERT_OK_AND_ASSIGN(Segment s, Segment::Create(size, "big", Segment::Reserve::kLazy));
  ASSERT_OK_AND_ASSIGN(Mapping m, s.Map());
  auto* bytes = static_cast<unsigned char*>(m.data());
  bytes[0] = 1;
  bytes[size / 2] = 2;
  bytes[size - 1] = 3;
  EXPECT_EQ(bytes[0] + bytes[size / 2] + bytes[size - 1], 6);
}

}  // namespace
}  // namespace mproc
