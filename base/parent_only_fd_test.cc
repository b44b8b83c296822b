#include "base/parent_only_fd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "base/test_util.h"
#include "base/unique_fd.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

bool IsPipe(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}
bool IsSocket(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

struct Pipe {
  UniqueFd r, w;
};
Pipe MakePipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return {};
  return {UniqueFd(p[0]), UniqueFd(p[1])};
}

// Every fork() child lets go of what is listed at once (the atfork handler): the number
// stays taken by a placeholder, so the child's copy of the owner closing it later hurts
// nothing; descriptors never listed, or unlisted, are kept; the child's list starts empty.
TEST(ParentOnlyFdTest, EveryForkChildLetsGoOfWhatIsListedAndKeepsTheRest) {
  Pipe listed = MakePipe();
  Pipe kept = MakePipe();
  Pipe unlisted = MakePipe();
  ASSERT_TRUE(listed.r.ok() && kept.r.ok() && unlisted.r.ok());
  const int before = ParentOnlyFdCount();
  ParentOnlyFd owned(std::move(listed.w));  // the parent's end of a helper's channel
  ParentOnlyListing listing(listed.r.get());
  {
    ParentOnlyListing gone(unlisted.r.get());
    EXPECT_EQ(ParentOnlyFdCount(), before + 3);
  }
  EXPECT_EQ(ParentOnlyFdCount(), before + 2);  // owned and listing
  const int w = owned.get(), r = listed.r.get(), k = kept.r.get(), u = unlisted.r.get();
  pid_t pid = testing::Child([&] {
    if (ParentOnlyFdCount() != 0) return 1;      // emptied by the fork
    if (!IsSocket(w) || !IsSocket(r)) return 2;  // placeholders: a socket whose peer is gone
    char c;
    if (::read(r, &c, 1) != 0) return 7;     // reads as a closed channel
    if (!IsPipe(k) || !IsPipe(u)) return 3;  // never listed, or unlisted: kept
    if (ReleaseParentOnlyFdsInForkChild() != 0) return 4;
    // The child's copies of the owners close only their placeholders.
    owned.Reset();
    if (::fcntl(w, F_GETFD) != -1) return 5;
    UniqueFd mine(::open("/dev/null", O_RDONLY | O_CLOEXEC));  // may reuse w's number
    ParentOnlyListing own(mine.get());
    ParentOnlyListing inherited = std::move(listing);
    inherited.Reset();  // unlists nothing of the child's own
    if (ParentOnlyFdCount() != 1) return 6;
    return 0;
  });
  EXPECT_EQ(testing::Join(pid), 0);
  // The child let go of its copy of the write end: with the parent's closed too, the read end
  // sees end of file, which an inherited copy would have prevented.
  owned.Reset();
  char c;
  EXPECT_EQ(::read(listed.r.get(), &c, 1), 0);
  EXPECT_TRUE(IsPipe(r));  // the parent's descriptors are as they were
  EXPECT_EQ(ParentOnlyFdCount(), before + 1);
  listing.Reset();
  EXPECT_EQ(ParentOnlyFdCount(), before);
}

TEST(ParentOnlyFdTest, MovingKeepsOneEntry) {
  Pipe p = MakePipe();
  const int before = ParentOnlyFdCount();
  ParentOnlyListing a(p.r.get());
  ParentOnlyListing b = std::move(a);
  EXPECT_FALSE(a.listed());
  EXPECT_TRUE(b.listed());
  ParentOnlyListing c;
  c = std::move(b);
  EXPECT_EQ(ParentOnlyFdCount(), before + 1);
  c = ParentOnlyListing();
  EXPECT_EQ(ParentOnlyFdCount(), before);
  ParentOnlyFd x(std::move(p.w));
  ParentOnlyFd y = std::move(x);
  EXPECT_FALSE(x.ok());
  EXPECT_EQ(ParentOnlyFdCount(), before + 1);
  y = ParentOnlyFd();
  EXPECT_EQ(ParentOnlyFdCount(), before);
}

}  // namespace
}  // namespace mproc
