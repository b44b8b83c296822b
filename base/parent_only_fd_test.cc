#include "base/parent_only_fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <utility>

#include "base/test_util.h"
#include "base/unique_fd.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

UniqueFd OpenNull() { return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

TEST(ParentOnlyFdTest, AForkChildClosesWhatIsListedAndKeepsTheRest) {
  UniqueFd listed_fd = OpenNull();
  UniqueFd kept_fd = OpenNull();
  UniqueFd unlisted_fd = OpenNull();
  ASSERT_TRUE(listed_fd.ok() && kept_fd.ok() && unlisted_fd.ok());
  const int before = ParentOnlyFdCount();
  ParentOnlyListing listing(listed_fd.get());
  ASSERT_TRUE(listing.listed());
  {
    ParentOnlyListing gone(unlisted_fd.get());
    EXPECT_EQ(ParentOnlyFdCount(), before + 2);
  }
  EXPECT_EQ(ParentOnlyFdCount(), before + 1);
  const int a = listed_fd.get(), b = kept_fd.get(), c = unlisted_fd.get();
  pid_t pid = testing::Child([&] {
    if (CloseParentOnlyFdsInForkChild() != before + 1) return 1;
    if (IsOpen(a)) return 2;                 // listed: closed
    if (!IsOpen(b) || !IsOpen(c)) return 3;  // never listed, or unlisted: kept
    if (ParentOnlyFdCount() != 0) return 4;  // the child's list starts empty
    // The child's own listing of a reused number is not undone by its copy of the parent's.
    UniqueFd mine = OpenNull();
    if (mine.get() != a) return 5;  // the lowest free number: the closed one
    ParentOnlyListing own(mine.get());
    ParentOnlyListing inherited = std::move(listing);
    inherited.Reset();
    if (ParentOnlyFdCount() != 1) return 6;
    return 0;
  });
  EXPECT_EQ(testing::Join(pid), 0);
  // The parent's descriptors and list are as they were.
  EXPECT_TRUE(IsOpen(a));
  EXPECT_EQ(ParentOnlyFdCount(), before + 1);
  listing.Reset();
  EXPECT_EQ(ParentOnlyFdCount(), before);
}

TEST(ParentOnlyFdTest, MovingAListingKeepsOneEntry) {
  UniqueFd fd = OpenNull();
  const int before = ParentOnlyFdCount();
  ParentOnlyListing a(fd.get());
  ParentOnlyListing b = std::move(a);
  EXPECT_FALSE(a.listed());
  EXPECT_TRUE(b.listed());
  ParentOnlyListing c;
  c = std::move(b);
  EXPECT_EQ(ParentOnlyFdCount(), before + 1);
  c = ParentOnlyListing();
  EXPECT_EQ(ParentOnlyFdCount(), before);
}

}  // namespace
}  // namespace mproc
