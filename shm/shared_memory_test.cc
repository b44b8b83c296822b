#include "shm/shared_memory.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::mproc::testing::Child;
using ::mproc::testing::Join;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Each test gets its own tmpfs directory, so sweeps of one test never see another's files.
class SharedMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/dev/shm/mproc-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    opts_.dir = tmpl;
  }
  void TearDown() override {
    std::string cmd = "rm -rf '" + opts_.dir + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  bool FileExists(const std::string& name) const {
    struct stat st;
    return ::stat((opts_.dir + "/mproc." + name).c_str(), &st) == 0;
  }
  // A child that creates segment `name` (64 KiB), writes `text` (with its NUL) at its start,
  // and then waits to be killed, never unlinking; returns once the segment is written.
  pid_t CreatorThatWaits(const char* name, const char* text) {
    SharedMemoryOptions opts = opts_;
    int ready[2];
    EXPECT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    pid_t pid = Child([&] {
      auto a = SharedMemory::Create(1 << 16, name, opts);
      if (!a.ok()) return 2;
      std::memcpy(a->data(), text, std::strlen(text) + 1);
      char c = 1;
      if (::write(ready[1], &c, 1) != 1) return 3;
      ::pause();  // SIGKILLed here, holding its segment
      return 4;
    });
    ::close(ready[1]);
    char c;
    EXPECT_EQ(::read(ready[0], &c, 1), 1);
    ::close(ready[0]);
    return pid;
  }
  SharedMemoryOptions opts_;
};

TEST_F(SharedMemoryTest, CreateThenAttachByNameSeesContents) {
  ASSERT_OK_AND_ASSIGN(SharedMemory a, SharedMemory::Create(512, "basics", opts_));
  EXPECT_EQ(a.name(), "basics");
  EXPECT_EQ(a.size(), 512u);
  std::memcpy(a.data(), "hello", 6);
  ASSERT_OK_AND_ASSIGN(SharedMemory b, SharedMemory::Attach("/basics", opts_));  // CPython's '/'
  EXPECT_EQ(b.name(), "basics");
  EXPECT_EQ(b.size(), 512u);
  EXPECT_STREQ(static_cast<const char*>(b.data()), "hello");
  std::memcpy(b.data(), "world", 6);
  EXPECT_STREQ(static_cast<const char*>(a.data()), "world");
  EXPECT_TRUE(FileExists("basics"));
  b.Close();
  b.Close();  // idempotent
  EXPECT_TRUE(b.closed());
  MPROC_EXPECT_OK(a.Unlink());
  EXPECT_FALSE(FileExists("basics"));
}

TEST_F(SharedMemoryTest, ValidationErrorsAreClear) {
  EXPECT_THAT(SharedMemory::Create(0, "zero", opts_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("positive")));
  EXPECT_THAT(SharedMemory::Create(16, "a/b", opts_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'/'")));
  EXPECT_THAT(SharedMemory::Create(16, "..", opts_),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SharedMemory::Attach(std::string_view("nul\0name", 8), opts_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
  EXPECT_THAT(SharedMemory::Unlink(std::string_view("nul\0name", 8), opts_),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SharedMemory::Attach("missing", opts_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does not exist")));

  ASSERT_OK_AND_ASSIGN(SharedMemory a, SharedMemory::Create(64, "dup", opts_));
  EXPECT_THAT(SharedMemory::Create(64, "dup", opts_),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("dup")));
  MPROC_EXPECT_OK(a.Unlink());
  EXPECT_THAT(a.Unlink(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("already unlinked")));
  EXPECT_THAT(SharedMemory::Attach("dup", opts_), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(SharedMemoryTest, EmptyNamePicksFreshRandomNames) {
  ASSERT_OK_AND_ASSIGN(SharedMemory a, SharedMemory::Create(100, "", opts_));
  ASSERT_OK_AND_ASSIGN(SharedMemory b, SharedMemory::Create(100, "", opts_));
  EXPECT_THAT(a.name(), StartsWith("mproc_"));
  EXPECT_EQ(a.name().size(), 6u + 16u);
  EXPECT_NE(a.name(), b.name());
  ASSERT_OK_AND_ASSIGN(SharedMemory a2, SharedMemory::Attach(a.name(), opts_));
  EXPECT_EQ(a2.size(), 100u);
  MPROC_EXPECT_OK(a.Unlink());
  MPROC_EXPECT_OK(b.Unlink());
}

TEST_F(SharedMemoryTest, UnlinkKeepsExistingViewsValid) {
  ASSERT_OK_AND_ASSIGN(SharedMemory a, SharedMemory::Create(4096, "gone", opts_));
  ASSERT_OK_AND_ASSIGN(SharedMemory b, SharedMemory::Attach("gone", opts_));
  MPROC_ASSERT_OK(b.Unlink());
  std::memcpy(a.data(), "still here", 11);
  EXPECT_STREQ(static_cast<const char*>(b.data()), "still here");
  EXPECT_THAT(SharedMemory::Attach("gone", opts_), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(SharedMemoryTest, CreatorClosingItsViewKeepsTheName) {
  ASSERT_OK_AND_ASSIGN(SharedMemory a, SharedMemory::Create(64, "kept", opts_));
  std::memcpy(a.data(), "x", 2);
  a.Close();
  // The creator is alive and has not unlinked: not an orphan, whatever sweeps run.
  ASSERT_OK_AND_ASSIGN(int reclaimed, SharedMemory::ReclaimOrphans(opts_));
  EXPECT_EQ(reclaimed, 0);
  ASSERT_OK_AND_ASSIGN(SharedMemory b, SharedMemory::Attach("kept", opts_));
  EXPECT_STREQ(static_cast<const char*>(b.data()), "x");
  b.Close();
  EXPECT_TRUE(FileExists("kept"));
  MPROC_EXPECT_OK(SharedMemory::Unlink("kept", opts_));
}

TEST_F(SharedMemoryTest, ChildAttachesByNameAndWrites) {
  ASSERT_OK_AND_ASSIGN(SharedMemory a, SharedMemory::Create(4096, "xproc", opts_));
  SharedMemoryOptions opts = opts_;
  pid_t pid = Child([&] {
    auto b = SharedMemory::Attach("xproc", opts);
    if (!b.ok()) return 2;
    std::memcpy(b->data(), "from child", 11);
    return 0;
  });
  EXPECT_EQ(Join(pid), 0);
  EXPECT_STREQ(static_cast<const char*>(a.data()), "from child");
  MPROC_EXPECT_OK(a.Unlink());
}

// CPython's resource tracker unlinks only if the creator's tracker ran; here the kernel's lock
// bookkeeping is enough: a SIGKILLed creator's segment is reclaimed by the next sweep.
TEST_F(SharedMemoryTest, SegmentOfCreatorKilledWithoutUnlinkIsReclaimed) {
  const pid_t pid = CreatorThatWaits("orphan", "abandoned");
  ASSERT_TRUE(FileExists("orphan"));
  ASSERT_OK_AND_ASSIGN(int while_alive, SharedMemory::ReclaimOrphans(opts_));
  EXPECT_EQ(while_alive, 0);  // its creator is alive: left alone
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  ASSERT_OK_AND_ASSIGN(int reclaimed, SharedMemory::ReclaimOrphans(opts_));
  EXPECT_EQ(reclaimed, 1);
  EXPECT_FALSE(FileExists("orphan"));
  EXPECT_THAT(SharedMemory::Attach("orphan", opts_), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(SharedMemoryTest, CreateSweepsOrphansOfExitedCreators) {
  SharedMemoryOptions opts = opts_;
  pid_t pid = Child([&] {
    auto a = SharedMemory::Create(4096, "exited", opts);
    return a.ok() ? 0 : 2;  // exits without Unlink (its destructor only closes the view)
  });
  ASSERT_EQ(Join(pid), 0);
  ASSERT_TRUE(FileExists("exited"));
  // This process has not swept this directory yet, so its first Create does.
  ASSERT_OK_AND_ASSIGN(SharedMemory b, SharedMemory::Create(64, "other", opts_));
  EXPECT_FALSE(FileExists("exited"));
  MPROC_EXPECT_OK(b.Unlink());
}

// The other half: a segment attached somewhere is never destroyed under its user, even when
// its creator dies; the last view to close reclaims it.
TEST_F(SharedMemoryTest, AttachedSegmentOutlivesItsCreatorUntilLastClose) {
  const pid_t pid = CreatorThatWaits("held", "payload");
  ASSERT_OK_AND_ASSIGN(SharedMemory view, SharedMemory::Attach("held", opts_));
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);

  ASSERT_OK_AND_ASSIGN(int reclaimed, SharedMemory::ReclaimOrphans(opts_));
  EXPECT_EQ(reclaimed, 0);
  EXPECT_TRUE(FileExists("held"));
  EXPECT_STREQ(static_cast<const char*>(view.data()), "payload");

  // A fork child's copy of the view is inert: destroying it neither unlinks nor reclaims,
  // although the child shares this process's lock through the inherited descriptor.
  pid_t inert = Child([&] {
    view.Close();
    return 0;
  });
  ASSERT_EQ(Join(inert), 0);
  EXPECT_TRUE(FileExists("held"));

  ASSERT_OK_AND_ASSIGN(SharedMemory second, SharedMemory::Attach("held", opts_));
  EXPECT_STREQ(static_cast<const char*>(second.data()), "payload");
  view.Close();
  EXPECT_TRUE(FileExists("held"));  // `second` still attached
  second.Close();
  EXPECT_FALSE(FileExists("held"));  // last view out, creator gone: reclaimed
}

// List reads each segment's state from its lock bytes without changing it: a segment of a
// live creator, one attached here after its creator died, and an orphan.
TEST_F(SharedMemoryTest, ListShowsEachSegmentsStateAndChangesNothing) {
  SharedMemoryOptions opts = opts_;
  ASSERT_OK_AND_ASSIGN(SharedMemory mine, SharedMemory::Create(100, "mine", opts_));
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t pid = Child([&] {
    auto held = SharedMemory::Create(4096, "held", opts);
    auto orphan = SharedMemory::Create(8192, "orphan", opts);
    if (!held.ok() || !orphan.ok()) return 2;
    char c = 1;
    if (::write(ready[1], &c, 1) != 1) return 3;
    ::pause();  // SIGKILLed here, never unlinking either
    return 4;
  });
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_OK_AND_ASSIGN(SharedMemory view, SharedMemory::Attach("held", opts_));
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);

  for (int round = 0; round < 2; ++round) {  // a second listing sees the same: nothing changed
    ASSERT_OK_AND_ASSIGN(std::vector<SharedMemoryInfo> all, SharedMemory::List(opts_));
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0].name, "held");
    EXPECT_EQ(all[0].size, 4096u);
    EXPECT_TRUE(all[0].attached);
    EXPECT_FALSE(all[0].creator_alive);
    EXPECT_FALSE(all[0].orphan());
    EXPECT_EQ(all[1].name, "mine");
    EXPECT_EQ(all[1].path, opts_.dir + "/mproc.mine");
    EXPECT_TRUE(all[1].attached);
    EXPECT_TRUE(all[1].creator_alive);
    EXPECT_EQ(all[2].name, "orphan");
    EXPECT_EQ(all[2].size, 8192u);
    EXPECT_TRUE(all[2].orphan());
  }
  ASSERT_OK_AND_ASSIGN(int reclaimed, SharedMemory::ReclaimOrphans(opts_));
  EXPECT_EQ(reclaimed, 1);
  ASSERT_OK_AND_ASSIGN(std::vector<SharedMemoryInfo> after, SharedMemory::List(opts_));
  EXPECT_EQ(after.size(), 2u);
  MPROC_EXPECT_OK(mine.Unlink());
  EXPECT_THAT(SharedMemory::List({.dir = "/nonexistent/mproc"}).status(),
              StatusIs(absl::StatusCode::kNotFound));
}

// A copy is another handle of the same view, as Lock and Value copies are: it passes to a
// child as they do. Closing one handle leaves the others working; the last one out of a
// segment whose creator is gone reclaims it.
TEST_F(SharedMemoryTest, CopiesAreHandlesOfOneView) {
  ASSERT_OK_AND_ASSIGN(SharedMemory a, SharedMemory::Create(4096, "copied", opts_));
  SharedMemory b = a;
  EXPECT_EQ(b.data(), a.data());
  EXPECT_EQ(b.size(), 4096u);
  EXPECT_EQ(b.name(), "copied");
  a.Close();
  EXPECT_TRUE(a.closed());
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  ASSERT_FALSE(b.closed());
  std::memcpy(b.data(), "still", 6);  // still mapped
  SharedMemory c;
  c = b;
  EXPECT_STREQ(static_cast<const char*>(c.data()), "still");
  MPROC_EXPECT_OK(c.Unlink());
  b.Close();
  EXPECT_FALSE(c.closed());
  c.Close();
  EXPECT_TRUE(c.closed());

  SharedMemoryOptions opts = opts_;
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t pid = Child([&] {
    auto m = SharedMemory::Create(4096, "left", opts);
    char ch = 1;
    if (!m.ok() || ::write(ready[1], &ch, 1) != 1) return 2;
    ::pause();
    return 3;
  });
  ::close(ready[1]);
  char ch;
  ASSERT_EQ(::read(ready[0], &ch, 1), 1);
  ::close(ready[0]);
  ASSERT_OK_AND_ASSIGN(SharedMemory view, SharedMemory::Attach("left", opts_));
  SharedMemory copy = view;
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  view.Close();
  EXPECT_TRUE(FileExists("left"));  // `copy` still holds the view
  copy.Close();
  EXPECT_FALSE(FileExists("left"));  // the last handle out, creator gone: reclaimed
}

TEST_F(SharedMemoryTest, OneGibSegmentWorks) {
  constexpr size_t kGiB = size_t{1} << 30;
  ASSERT_OK_AND_ASSIGN(SharedMemory a, SharedMemory::Create(kGiB, "big", opts_));
  ASSERT_OK_AND_ASSIGN(SharedMemory b, SharedMemory::Attach("big", opts_));
  EXPECT_EQ(b.size(), kGiB);
  auto* p = static_cast<unsigned char*>(a.data());
  p[0] = 1;
  p[kGiB / 2] = 2;
  p[kGiB - 1] = 3;
  auto* q = static_cast<unsigned char*>(b.data());
  EXPECT_EQ(q[0], 1);
  EXPECT_EQ(q[kGiB / 2], 2);
  EXPECT_EQ(q[kGiB - 1], 3);
  MPROC_EXPECT_OK(a.Unlink());
}

// A 1 MiB tmpfs in a private mount namespace (a user namespace when not root): eager
// reservation turns exhaustion into RESOURCE_EXHAUSTED, and $MPROC_SHM_DIR picks the directory.
TEST_F(SharedMemoryTest, FullTmpfsIsResourceExhausted) {
  const std::string dir = opts_.dir;
  pid_t pid = Child([&]() -> int {
    uid_t uid = ::getuid();
    gid_t gid = ::getgid();
    int flags = CLONE_NEWNS | (uid == 0 ? 0 : CLONE_NEWUSER);
    if (::unshare(flags) != 0) return 77;
    if (uid != 0) {
      auto write_file = [](const char* path, const std::string& s) {
        int fd = ::open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) return false;
        bool ok = ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size());
        ::close(fd);
        return ok;
      };
      if (!write_file("/proc/self/setgroups", "deny") ||
          !write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
          !write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) {
        return 77;
      }
    }
    ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=1m,mode=0700") != 0) return 77;
    ::setenv("MPROC_SHM_DIR", dir.c_str(), 1);
    SharedMemoryOptions eager;  // dir from the environment
    eager.reserve = Segment::Reserve::kEager;
    auto too_big = SharedMemory::Create(4 << 20, "too-big", eager);
    if (too_big.status().code() != absl::StatusCode::kResourceExhausted) return 10;
    if (too_big.status().message().find("exhausted") == std::string_view::npos) return 11;
    auto fits = SharedMemory::Create(512 << 10, "fits", eager);
    if (!fits.ok()) return 12;
    struct stat st;
    if (::stat((dir + "/mproc.fits").c_str(), &st) != 0) return 13;  // landed in $MPROC_SHM_DIR
    auto rest = SharedMemory::Create(768 << 10, "rest", eager);
    if (rest.status().code() != absl::StatusCode::kResourceExhausted) return 14;
    if (::stat((dir + "/mproc.too-big").c_str(), &st) == 0) return 15;  // nothing half-made
    if (!fits->Unlink().ok()) return 16;
    // Unlinked but still mapped here: its pages stay in use until the last view closes.
    auto still_full = SharedMemory::Create(768 << 10, "rest", eager);
    if (still_full.status().code() != absl::StatusCode::kResourceExhausted) return 19;
    fits->Close();
    auto now_fits = SharedMemory::Create(768 << 10, "rest", eager);
    if (!now_fits.ok()) return 17;
    if (!now_fits->Unlink().ok()) return 18;
    return 0;
  });
  int rc = Join(pid);
  if (rc == 77) GTEST_SKIP() << "cannot mount a tmpfs in a private mount namespace here";
  EXPECT_EQ(rc, 0);
}

TEST_F(SharedMemoryTest, DirectoryDefaultsAndOverrides) {
  EXPECT_EQ(SharedMemory::Directory(opts_), opts_.dir);
  ::unsetenv("MPROC_SHM_DIR");
  EXPECT_EQ(SharedMemory::Directory({}), "/dev/shm");
  ::setenv("MPROC_SHM_DIR", "/tmp/elsewhere", 1);
  EXPECT_EQ(SharedMemory::Directory({}), "/tmp/elsewhere");
  ::unsetenv("MPROC_SHM_DIR");
  SharedMemoryOptions missing;
  missing.dir = opts_.dir + "/no-such-dir";
  EXPECT_THAT(SharedMemory::Create(64, "x", missing), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace mproc
