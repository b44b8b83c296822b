#include "base/unique_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace mproc {
namespace {

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(UniqueFdTest, ClosesOnDestruction) {
  int raw;
  {
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.ok());
    raw = fd.get();
    EXPECT_TRUE(IsOpen(raw));
  }
  EXPECT_FALSE(IsOpen(raw));
}

TEST(UniqueFdTest, ReleaseGivesUpOwnership) {
  UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int raw = fd.Release();
  EXPECT_FALSE(fd.ok());
  EXPECT_EQ(fd.get(), -1);
  EXPECT_TRUE(IsOpen(raw));
  ::close(raw);
}

TEST(UniqueFdTest, MoveTransfersOwnership) {
  UniqueFd a(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int raw = a.get();
  UniqueFd b(std::move(a));
  EXPECT_FALSE(a.ok());
  EXPECT_EQ(b.get(), raw);
  UniqueFd c;
  c = std::move(b);
  EXPECT_EQ(c.get(), raw);
  EXPECT_TRUE(IsOpen(raw));
  c = UniqueFd();
  EXPECT_FALSE(IsOpen(raw));
}

TEST(UniqueFdTest, ResetPreservesErrnoAndClosesOld) {
  UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int old = fd.get();
  errno = ENOENT;
  fd.Reset(::open("/dev/zero", O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(errno, ENOENT);
  EXPECT_TRUE(fd.ok());
  if (fd.get() != old) EXPECT_FALSE(IsOpen(old));
  errno = EPERM;
  fd.Reset();
  EXPECT_EQ(errno, EPERM);
  EXPECT_FALSE(fd.ok());
}

TEST(UniqueFdTest, BorrowedFdDoesNotClose) {
  UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  { BorrowedFd b = fd.borrow(); EXPECT_EQ(b.get(), fd.get()); }
  EXPECT_TRUE(IsOpen(fd.get()));
  EXPECT_FALSE(BorrowedFd().ok());
}

}  // namespace
}  // namespace mproc
