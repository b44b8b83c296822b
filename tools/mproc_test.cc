// tools/mproc against real objects: segments in each state, a live manager and fork server,
// a socket directory left behind by a SIGKILLed owner, and the report.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/socket_dir.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "manager/manager.h"
#include "shm/shared_memory.h"
#include "spawn/process.h"

namespace mproc {
namespace {

using ::mproc::testing::Child;
using ::mproc::testing::Join;
using ::mproc::testing::ProgramOutcome;
using ::mproc::testing::RunProgram;
using ::mproc::testing::Runfile;
using ::testing::HasSubstr;


// The line of `text` containing `needle` ("" when none).
std::string LineWith(const std::string& text, const std::string& needle) {
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    if (absl::StrContains(l, needle)) return std::string(l);
  }
  return "";
}

class MprocToolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char shm[] = "/dev/shm/mproc-tool-test-XXXXXX";
    ASSERT_NE(::mkdtemp(shm), nullptr);
    shm_dir_ = shm;
    char tmp[] = "/tmp/mproc-tool-XXXXXX";
    ASSERT_NE(::mkdtemp(tmp), nullptr);
    tmp_dir_ = tmp;
    char scratch[] = "/tmp/mproc-tool-out-XXXXXX";
    ASSERT_NE(::mkdtemp(scratch), nullptr);
    scratch_ = scratch;
    // The fork server and managers this test starts put their sockets here.
    saved_tmpdir_ = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "";
    ::setenv("TMPDIR", tmp_dir_.c_str(), 1);
  }
  void TearDown() override {
    ShutdownForkServer();
    if (saved_tmpdir_.empty()) {
      ::unsetenv("TMPDIR");
    } else {
      ::setenv("TMPDIR", saved_tmpdir_.c_str(), 1);
    }
    for (const std::string& d : {shm_dir_, tmp_dir_, scratch_}) {
      ASSERT_EQ(std::system(("rm -rf '" + d + "'").c_str()), 0);
    }
  }
  ProgramOutcome Tool(std::vector<std::string> args) {
    args.insert(args.begin(), {Runfile("tools/mproc"), "--shm_dir=" + shm_dir_, "--tmpdir=" + tmp_dir_});
    return RunProgram(args, scratch_);
  }
  std::string shm_dir_, tmp_dir_, scratch_, saved_tmpdir_;
};

TEST_F(MprocToolTest, ListsAndReclaimsWhatIsAbandonedOnly) {
  SharedMemoryOptions opts;
  opts.dir = shm_dir_;
  ASSERT_OK_AND_ASSIGN(SharedMemory mine, SharedMemory::Create(1000, "in-use", opts));

  // An orphan, and a socket directory left behind: their creator is SIGKILLed.
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  const std::string tmp = tmp_dir_;
  pid_t victim = Child([&] {
    auto orphan = SharedMemory::Create(4096, "abandoned", opts);
    absl::StatusOr<std::string> dir = MakeSocketDir("manager");
    if (!orphan.ok() || !dir.ok()) return 2;
    int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = *dir + "/socket";
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(s, 1) != 0) return 3;
    char c = 1;
    if (::write(ready[1], &c, 1) != 1) return 4;
    ::pause();
    return 5;
  });
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);

  // A live manager (which starts the fork server too, under the default method).
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Manager> m, Manager::Start());
  const std::string me = std::to_string(::getpid());

  ProgramOutcome before = Tool({"ls"});
  ASSERT_EQ(before.exit_code, 0) << before.err;
  std::string line = LineWith(before.out, "in-use");
  EXPECT_THAT(line, HasSubstr("1000"));
  EXPECT_THAT(line, HasSubstr("creator alive"));
  EXPECT_THAT(line, HasSubstr(me)) << before.out;  // open by this process
  EXPECT_THAT(LineWith(before.out, "abandoned"), HasSubstr("creator alive"));  // victim alive
  std::string mgr = LineWith(before.out, absl::StrCat("mproc-manager-", me, "-"));
  EXPECT_THAT(mgr, HasSubstr(std::to_string(m->pid())));  // served by the manager's process
  EXPECT_THAT(mgr, HasSubstr(me + " (alive)"));
  EXPECT_THAT(mgr, HasSubstr("live"));
  std::string fs = LineWith(before.out, absl::StrCat("mproc-forkserver-", me, "-"));
  EXPECT_THAT(fs, HasSubstr(std::to_string(ForkServerPid())));
  EXPECT_THAT(fs, HasSubstr("live"));

  ::kill(victim, SIGKILL);
  ASSERT_EQ(Join(victim), 128 + SIGKILL);
  const std::string dead = std::to_string(victim);

  ProgramOutcome after_kill = Tool({});  // ls is the default
  ASSERT_EQ(after_kill.exit_code, 0) << after_kill.err;
  EXPECT_THAT(LineWith(after_kill.out, "abandoned"), HasSubstr("orphan"));
  std::string stale = LineWith(after_kill.out, absl::StrCat("mproc-manager-", dead, "-"));
  EXPECT_THAT(stale, HasSubstr(dead + " (gone)"));
  EXPECT_THAT(stale, HasSubstr("stale"));

  ProgramOutcome reclaimed = Tool({"reclaim"});
  ASSERT_EQ(reclaimed.exit_code, 0) << reclaimed.err;
  EXPECT_THAT(reclaimed.out, HasSubstr("reclaimed 1 shared memory segment and 1 socket directory"));

  ProgramOutcome after = Tool({"ls"});
  EXPECT_EQ(LineWith(after.out, "abandoned"), "");
  EXPECT_EQ(LineWith(after.out, absl::StrCat("mproc-manager-", dead, "-")), "");
  EXPECT_THAT(LineWith(after.out, "in-use"), HasSubstr("creator alive"));  // untouched
  EXPECT_THAT(LineWith(after.out, absl::StrCat("mproc-manager-", me, "-")), HasSubstr("live"));
  // The live manager still serves.
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
  MPROC_EXPECT_OK(d.Set("still", 1));
  MPROC_EXPECT_OK(mine.Unlink());
}

TEST_F(MprocToolTest, ReportRunsTheBenchmarkReport) {
  ::setenv("MPROC_REPORT", Runfile("bench/report").c_str(), 1);
  ProgramOutcome r = Tool({"report", "--quick", "--no_python", "--filter=kernel.futex",
                    "--json=" + scratch_ + "/r.json", "--chart=" + scratch_ + "/r.svg"});
  ::unsetenv("MPROC_REPORT");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("kernel.futex"));
  ::unlink((scratch_ + "/r.json").c_str());
  ::unlink((scratch_ + "/r.svg").c_str());
}

TEST_F(MprocToolTest, UnknownArgumentsAreUsageErrors) {
  ProgramOutcome r = Tool({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown argument \"frobnicate\""));
  EXPECT_THAT(r.err, HasSubstr("usage: mproc"));
}

}  // namespace
}  // namespace mproc
