#include "spawn/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/features.h"
#include "base/seccomp_for_testing.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spawn/internal/bootstrap.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

// ---- targets (free functions: they must be reachable in a spawned child)

void Noop() {}
int ReturnSeven() { return 7; }
void CallsExit(int code) { std::exit(code); }
void CallsUnderscoreExit(int code) { ::_exit(code); }
void Throws() { throw std::runtime_error("boom from the child"); }
absl::Status ReturnsError() { return absl::InternalError("target failed"); }
void SleepForever() {
  for (;;) ::pause();
}

// Exit code 0 when the arguments arrived intact.
int CheckArgs(int a, std::string s, std::vector<int> v, double d) {
  return (a == 42 && s == "hello, child" && v == std::vector<int>{1, 2, 3} && d == 2.5) ? 0 : 1;
}

// Writes `text` to the descriptor it was handed.
int WriteTo(UniqueFd fd, std::string text) {
  return ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()) ? 0 : 1;
}

int g_global = 1;
int ReturnGlobal() { return g_global; }

// The number of open descriptors other than stdio, `allowed` and the parent's pidfd (which
// every child gets, to watch its parent).
int CountExtraFds(UniqueFd allowed) {
  DIR* d = ::opendir("/proc/self/fd");
  int extra = 0;
  int pidfds = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    int fd = std::atoi(e->d_name);
    if (fd <= 2 || fd == ::dirfd(d) || fd == allowed.get()) continue;
    char link[64] = {};
    std::string path = std::string("/proc/self/fd/") + e->d_name;
    if (::readlink(path.c_str(), link, sizeof(link) - 1) > 0 &&
        std::string(link) == "anon_inode:[pidfd]" && pidfds++ == 0) {
      continue;
    }
    ++extra;
  }
  ::closedir(d);
  return extra;
}

// Exit code 0 when starting a grandchild is refused because this process is a daemon.
int StartFromDaemon() {
  Process p(Noop);
  absl::Status s = p.Start();
  return s.code() == absl::StatusCode::kFailedPrecondition &&
                 std::string(s.message()).find("daemon") != std::string::npos
             ? 0
             : 1;
}

int CheckIdentity(std::string expected_name, int32_t expected_parent) {
  return CurrentProcessName() == expected_name && ParentPid() == expected_parent ? 0 : 1;
}

int g_after_fork_runs = 0;
[[maybe_unused]] const int kRegisterAtStartup = [] {
  RegisterAfterFork([] { ++g_after_fork_runs; });
  return 0;
}();
int ReturnAfterForkRuns() { return g_after_fork_runs; }

// Names, as CPython's: the next Process's name in a child, from construction.
int CheckNestedName() {
  Process p(Noop);
  // In "Process-2", the first Process made is "Process-2:1".
  return p.name() == CurrentProcessName() + ":1" ? 0 : 1;
}

// Exit handlers: the parent registers one (inherited by fork children, where it must not run);
// a child registers its own (which must run), each writing a word to the child's descriptor.
int g_marker_fd = -1;
void InheritedHandler() {
  if (g_marker_fd >= 0) (void)!::write(g_marker_fd, "inherited;", 10);
}
void ChildHandler() {
  if (g_marker_fd >= 0) (void)!::write(g_marker_fd, "child;", 6);
}
int RegisterAndReturn(UniqueFd marker, int code) {
  g_marker_fd = marker.Release();
  std::atexit(ChildHandler);
  return code;
}
void RegisterAndExit(UniqueFd marker, int code) {
  g_marker_fd = marker.Release();
  std::atexit(ChildHandler);
  std::exit(code);
}

// Starts four daemon children and one ordinary child, from a thread that then ends, reports
// their pids (daemons first) and waits to be killed.
int StartChildrenFromAThreadThenWait(UniqueFd report, StartMethod method) {
  std::vector<Process> ps;
  for (int i = 0; i < 5; ++i) {
    ps.emplace_back(SleepForever);
    ps.back().SetDaemon(i < 4).SetStartMethod(method);
  }
  bool ok = true;
  std::thread([&] {
    for (Process& p : ps) ok = ok && p.Start().ok();
  }).join();
  if (!ok) return 2;
  std::vector<int32_t> pids;
  for (Process& p : ps) pids.push_back(p.pid());
  const size_t bytes = pids.size() * sizeof(int32_t);
  if (::write(report.get(), pids.data(), bytes) != static_cast<ssize_t>(bytes)) return 3;
  for (;;) ::pause();
}

class ProcessTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }  // no child outlives a test
  // Starts `p` under the parameter's start method and joins it (bounded); returns exitcode.
  std::optional<int> RunToEnd(Process& p) {
    p.SetStartMethod(GetParam());
    absl::Status s = p.Start();
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return std::nullopt;
    s = p.Join(absl::Seconds(60));
    EXPECT_TRUE(s.ok()) << s;
    if (p.IsAlive()) {
      ADD_FAILURE() << "child still running after 60 s";
      (void)p.Kill();
      (void)p.Join();
    }
    return p.exitcode();
  }
};

TEST_P(ProcessTest, ExitCodesFollowCPython) {
  Process noop(Noop);
  EXPECT_EQ(RunToEnd(noop), 0);
  Process seven(ReturnSeven);
  EXPECT_EQ(RunToEnd(seven), 7);
  Process exits(CallsExit, 3);
  EXPECT_EQ(RunToEnd(exits), 3);
  Process raw_exit(CallsUnderscoreExit, 4);
  EXPECT_EQ(RunToEnd(raw_exit), 4);
  Process throws(Throws);
  EXPECT_EQ(RunToEnd(throws), 1);
  Process status(ReturnsError);
  EXPECT_EQ(RunToEnd(status), 1);
}

// CPython's module-level functions: cpu_count, get_all_start_methods, current_process,
// parent_process, active_children.
TEST(ModuleFunctionsTest, InTheMainProcess) {
  cpu_set_t set;
  ASSERT_EQ(::sched_getaffinity(0, sizeof(set), &set), 0);
  EXPECT_GE(CpuCount(), 1);
  EXPECT_LE(CpuCount(), CPU_COUNT(&set));
  std::vector<StartMethod> all = GetAllStartMethods();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0], GetStartMethod());
  EXPECT_EQ(std::set<StartMethod>(all.begin(), all.end()).size(), 3u);
  ProcessInfo me = CurrentProcess();
  EXPECT_EQ(me.name, "MainProcess");
  EXPECT_EQ(me.pid, ::getpid());
  EXPECT_EQ(me.identity, "");
  EXPECT_FALSE(ParentProcess().has_value());
}

// A child reports who it is and who its parent is, and waits until told to end.
int ReportFamily(UniqueFd out, UniqueFd go) {
  ProcessInfo me = CurrentProcess();
  std::optional<ParentProcessInfo> parent = ParentProcess();
  std::string line = me.name + "|" + std::to_string(me.pid) + "|" +
                     (parent ? parent->name + "|" + std::to_string(parent->pid) + "|" +
                                   (parent->IsAlive() ? "alive" : "dead")
                             : std::string("none")) + "\n";
  if (::write(out.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) return 2;
  out.Reset();
  char b;
  return ::read(go.get(), &b, 1) >= 0 ? 0 : 3;
}

TEST_P(ProcessTest, ChildrenKnowThemselvesAndTheirParent) {
  int out[2], go[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  UniqueFd out_r(out[0]), go_w(go[1]);
  Process p(ReportFamily, UniqueFd(out[1]), UniqueFd(go[0]));
  p.SetName("Reporter");
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  // One line (the write end stays open here too under fork: the Process keeps its arguments).
  std::string got;
  char c;
  while (::read(out_r.get(), &c, 1) == 1 && c != '\n') got.push_back(c);
  EXPECT_EQ(got, "Reporter|" + std::to_string(p.pid()) + "|MainProcess|" +
                     std::to_string(::getpid()) + "|alive");
  // Running: among the active children; finished: not.
  std::vector<ProcessInfo> active = ActiveChildren();
  EXPECT_TRUE(std::any_of(active.begin(), active.end(), [&](const ProcessInfo& c) {
    return c.pid == p.pid() && c.name == "Reporter";
  }));
  ASSERT_EQ(::write(go_w.get(), "g", 1), 1);  // the child ends (a fork child holds go_w too)
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  EXPECT_EQ(p.exitcode(), 0);
  active = ActiveChildren();
  EXPECT_TRUE(std::none_of(active.begin(), active.end(),
                           [&](const ProcessInfo& c) { return c.pid == p.pid(); }));
}

// As Python's traceback ends with "RuntimeError: boom": the exception's type and message.
TEST(ProcessStderrTest, AnUncaughtExceptionPrintsItsTypeAndMessage) {
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  const int saved = ::dup(2);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(::dup2(pipefd[1], 2), 2);  // the fork child inherits this stderr
  Process throws(Throws);
  throws.SetStartMethod(StartMethod::kFork);
  absl::Status started = throws.Start();
  absl::Status joined = started.ok() ? throws.Join(absl::Seconds(60)) : started;
  ::dup2(saved, 2);
  ::close(saved);
  ::close(pipefd[1]);
  MPROC_ASSERT_OK(joined);
  std::string err;
  char buf[512];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof(buf))) > 0;) err.append(buf, n);
  ::close(pipefd[0]);
  EXPECT_EQ(throws.exitcode(), 1);
  EXPECT_THAT(err, HasSubstr("uncaught exception: std::runtime_error: boom from the child"));
}

TEST_P(ProcessTest, TerminateAndKillGiveMinusTheSignal) {
  Process t(SleepForever);
  t.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(t.Start());
  EXPECT_TRUE(t.IsAlive());
  EXPECT_GT(t.pid(), 0);
  EXPECT_GE(t.sentinel(), 0);
  MPROC_ASSERT_OK(t.Terminate());
  MPROC_ASSERT_OK(t.Join(absl::Seconds(60)));
  EXPECT_EQ(t.exitcode(), -SIGTERM);
  MPROC_EXPECT_OK(t.Terminate());  // reaped: nothing to do, no error

  Process k(SleepForever);
  k.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(k.Start());
  MPROC_ASSERT_OK(k.Kill());
  MPROC_ASSERT_OK(k.Join(absl::Seconds(60)));
  EXPECT_EQ(k.exitcode(), -SIGKILL);
  EXPECT_FALSE(k.IsAlive());
}

TEST_P(ProcessTest, JoinWithTimeoutReturnsWithTheChildStillRunning) {
  Process p(SleepForever);
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  double t0 = testing::NowSeconds();
  MPROC_ASSERT_OK(p.Join(absl::Milliseconds(100)));
  EXPECT_GE(testing::NowSeconds() - t0, 0.099);  // a lower bound only
  EXPECT_TRUE(p.IsAlive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  EXPECT_THAT(p.Close(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("running")));
  MPROC_ASSERT_OK(p.Kill());
  MPROC_ASSERT_OK(p.Join());
  MPROC_EXPECT_OK(p.Close());
  EXPECT_EQ(p.sentinel(), -1);
  EXPECT_THAT(p.Join(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("closed")));
}

TEST_P(ProcessTest, MisuseIsFailedPrecondition) {
  Process p(Noop);
  p.SetStartMethod(GetParam());
  EXPECT_THAT(p.Join(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not started")));
  EXPECT_THAT(p.Terminate(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_FALSE(p.IsAlive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  EXPECT_EQ(p.pid(), 0);
  MPROC_ASSERT_OK(p.Start());
  EXPECT_THAT(p.Start(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("once")));
  MPROC_ASSERT_OK(p.Join());
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessTest, ArgumentsArriveIntact) {
  Process p(CheckArgs, 42, std::string("hello, child"), std::vector<int>{1, 2, 3}, 2.5);
  EXPECT_EQ(RunToEnd(p), 0);
  Process converted(CheckArgs, 42, "hello, child", std::vector<int>{1, 2, 3}, 2.5f);
  EXPECT_EQ(RunToEnd(converted), 0);
}

TEST_P(ProcessTest, DescriptorArgumentsWorkInTheChild) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]);
  {
    Process p(WriteTo, UniqueFd(fds[1]), std::string("through the handle"));
    EXPECT_EQ(RunToEnd(p), 0);
  }  // the Process (and its copy of the write end) is gone: the read sees EOF after the data
  std::string got(64, '\0');
  ssize_t n = ::read(r.get(), got.data(), got.size());
  ASSERT_GT(n, 0);
  got.resize(static_cast<size_t>(n));
  EXPECT_EQ(got, "through the handle");
}

TEST_P(ProcessTest, LambdasAndCapturingCallables) {
  Process lambda([](int x) { return x + 1; }, 4);
  EXPECT_EQ(RunToEnd(lambda), 5);

  int captured = 9;
  Process capturing([captured] { return captured; });
  capturing.SetStartMethod(GetParam());
  if (GetParam() == StartMethod::kFork) {
    MPROC_ASSERT_OK(capturing.Start());
    MPROC_ASSERT_OK(capturing.Join());
    EXPECT_EQ(capturing.exitcode(), 9);
  } else {
    EXPECT_THAT(capturing.Start(),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("capturing")));
  }
}

TEST_P(ProcessTest, GlobalsAreCopiedByForkButFreshUnderSpawn) {
  g_global = 2;
  Process p(ReturnGlobal);
  std::optional<int> code = RunToEnd(p);
  g_global = 1;
  EXPECT_EQ(code, GetParam() == StartMethod::kFork ? 2 : 1);
}

TEST_P(ProcessTest, NamesAndParent) {
  Process p(CheckIdentity, std::string("worker-a"), static_cast<int32_t>(::getpid()));
  p.SetName("worker-a");
  EXPECT_EQ(RunToEnd(p), 0);
  Process unnamed(Noop);
  EXPECT_EQ(RunToEnd(unnamed), 0);
  EXPECT_THAT(unnamed.name(), ::testing::StartsWith("Process-"));
  EXPECT_EQ(CurrentProcessName(), "MainProcess");
}

// CPython names a Process when it is made, not when it starts ("Process-N", N counting the
// Processes made in this process), and a child's own Processes below its identity.
TEST_P(ProcessTest, NamesComeFromConstruction) {
  Process a(Noop);
  Process b(Noop);
  ASSERT_THAT(a.name(), ::testing::StartsWith("Process-"));
  const int n = std::atoi(a.name().c_str() + 8);
  EXPECT_GT(n, 0);
  EXPECT_EQ(b.name(), "Process-" + std::to_string(n + 1));
  EXPECT_EQ(RunToEnd(a), 0);
  EXPECT_EQ(a.name(), "Process-" + std::to_string(n));  // Start keeps it
  Process nested(CheckNestedName);
  EXPECT_EQ(RunToEnd(nested), 0);
}

// A child runs the exit handlers it registered (when its target returns, or when it calls
// exit), keeping its exit code; a fork child never runs the ones it inherited.
TEST_P(ProcessTest, AChildRunsItsOwnExitHandlersNotInheritedOnes) {
  static bool registered = [] { return std::atexit(InheritedHandler) == 0; }();
  ASSERT_TRUE(registered);
  for (bool calls_exit : {false, true}) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    UniqueFd rd(fds[0]);
    Process p = calls_exit ? Process(RegisterAndExit, UniqueFd(fds[1]), 7)
                           : Process(RegisterAndReturn, UniqueFd(fds[1]), 7);
    EXPECT_EQ(RunToEnd(p), 7);
    char buf[64] = {};
    ssize_t n = ::read(rd.get(), buf, sizeof(buf) - 1);
    EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "child;")
        << (calls_exit ? "exit()" : "return");
  }
}

// A SIGKILLed parent takes its daemon children with it, within a second, whichever thread
// started them; an ordinary child outlives it (as in CPython).
TEST_P(ProcessTest, DaemonChildrenEndWithAKilledParentOthersOutliveIt) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd rd(fds[0]);
  Process parent(StartChildrenFromAThreadThenWait, UniqueFd(fds[1]), GetParam());
  parent.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(parent.Start());
  int32_t pids[5] = {};
  ASSERT_TRUE(testing::WaitReadable(rd.get(), 60));
  ASSERT_EQ(::read(rd.get(), pids, sizeof(pids)), static_cast<ssize_t>(sizeof(pids)));
  MPROC_ASSERT_OK(parent.Kill());
  MPROC_ASSERT_OK(parent.Join(absl::Seconds(30)));
  ASSERT_EQ(parent.exitcode(), -SIGKILL);
  const double t0 = testing::NowSeconds();
  auto dead = [](pid_t pid) {
    char s = testing::TaskState(pid);
    return s == '?' || s == 'Z';
  };
  for (int i = 0; i < 4; ++i) {
    while (!dead(pids[i]) && testing::NowSeconds() - t0 < 10) ::usleep(1000);
    EXPECT_TRUE(dead(pids[i])) << "daemon child " << i << " outlived its killed parent";
  }
  const double took = testing::NowSeconds() - t0;
  EXPECT_LT(took, 3.0);  // the promise is 1 s; this bounds it under a loaded CI machine
  std::printf("daemon children ended %.1f ms after their parent\n", took * 1000);
  EXPECT_FALSE(dead(pids[4])) << "the ordinary child should outlive its parent";
  ::kill(pids[4], SIGKILL);  // ours to end: it is no longer anyone's child we can join
}

// Join in one thread while others ask exitcode and open descriptors: Join never waits on a
// descriptor that another call closed (and the kernel handed to someone else).
TEST_P(ProcessTest, JoinRacingOtherCallsNeverWaitsOnAClosedDescriptor) {
  std::atomic<bool> stop{false};
  std::thread churn([&] {  // reuses any descriptor number as soon as it is free
    while (!stop.load()) {
      int fd = ::eventfd(0, EFD_CLOEXEC);
      if (fd >= 0) ::close(fd);
    }
  });
  for (int round = 0; round < 20; ++round) {
    Process p(Noop);
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
    std::thread poller([&] {
      while (!p.exitcode().has_value()) std::this_thread::yield();
    });
    const double t0 = testing::NowSeconds();
    MPROC_EXPECT_OK(p.Join(absl::Seconds(20)));
    EXPECT_LT(testing::NowSeconds() - t0, 10.0) << "round " << round;
    poller.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  stop = true;
  churn.join();
}

// A child reaped behind mproc's back (SIGCHLD ignored: the kernel reaps it) has an exit code
// that says so, not -1 (which reads as "killed by SIGHUP").
TEST_P(ProcessTest, AChildReapedElsewhereHasTheUnknownExitCode) {
  if (GetParam() == StartMethod::kForkServer) GTEST_SKIP() << "the fork server reaps and reports";
  StartMethod method = GetParam();
  pid_t helper = testing::Child([method] {
    ::signal(SIGCHLD, SIG_IGN);
    Process p(Noop);
    p.SetStartMethod(method);
    if (!p.Start().ok() || !p.Join(absl::Seconds(30)).ok()) return 2;
    return p.exitcode() == kExitCodeUnknown ? 0 : 3;
  });
  EXPECT_EQ(testing::Join(helper, 60), 0);
}

TEST_P(ProcessTest, AfterForkHooksRunOnceInEveryChild) {
  Process p(ReturnAfterForkRuns);
  EXPECT_EQ(RunToEnd(p), 1);
  EXPECT_EQ(g_after_fork_runs, 0);  // never in the parent
}

TEST_P(ProcessTest, DaemonsMayNotHaveChildren) {
  Process p(StartFromDaemon);
  p.SetDaemon(true);
  EXPECT_EQ(RunToEnd(p), 0);
}

// Fork children inherit what fork inherits; spawn and fork-server children get exactly what
// they were given (under forkserver the stray descriptor never even reaches the server).
TEST(SpawnTest, ChildrenGetExactlyTheDescriptorsTheyWereGiven) {
  for (StartMethod method : {StartMethod::kSpawn, StartMethod::kForkServer}) {
    int stray = ::fcntl(1, F_DUPFD, 10);  // inheritable: must not leak into the child
    ASSERT_GE(stray, 0);
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    ::close(fds[0]);
    Process p(CountExtraFds, UniqueFd(fds[1]));
    p.SetStartMethod(method);
    MPROC_ASSERT_OK(p.Start());
    MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
    EXPECT_EQ(p.exitcode(), 0) << StartMethodName(method);
    ::close(stray);
  }
  ShutdownForkServer();
}

TEST_P(ProcessTest, DaemonChildrenAreTerminatedAndOthersJoinedAtExit) {
  // A helper process starts a daemon that sleeps forever and a child that exits at once, then
  // returns from main (exit): the daemon must be terminated and both reaped by the at-exit
  // handler. The daemon's pid comes back through a pipe.
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  StartMethod method = GetParam();
  pid_t helper = testing::Child([&] {
    ::close(fds[0]);
    Process daemon(SleepForever);
    daemon.SetDaemon(true).SetStartMethod(method);
    Process quick(Noop);
    quick.SetStartMethod(method);
    if (!daemon.Start().ok() || !quick.Start().ok()) return 2;
    pid_t pid = daemon.pid();
    if (::write(fds[1], &pid, sizeof(pid)) != sizeof(pid)) return 3;
    std::exit(0);  // runs the at-exit handler
  });
  ::close(fds[1]);
  pid_t daemon_pid = 0;
  ASSERT_EQ(::read(fds[0], &daemon_pid, sizeof(daemon_pid)), static_cast<ssize_t>(sizeof(daemon_pid)));
  ::close(fds[0]);
  EXPECT_EQ(testing::Join(helper, 60), 0);
  // Reaped by the helper at exit (a zombie would still answer kill(pid, 0)).
  EXPECT_EQ(::kill(daemon_pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ProcessTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

TEST(SpawnTest, FallsBackToVforkWhenClone3IsMissing) {
  if (!HasFeature(Feature::kClone3)) GTEST_SKIP() << "clone3 is already missing here";
  pid_t pid = testing::Child([] {
    if (InstallSeccompErrno(__NR_clone3, ENOSYS) != 0) return 90;
    ResetFeatureCacheForTesting();
    int vforks = spawn_internal::LaunchCount(false);
    Process p(ReturnSeven);
    p.SetStartMethod(StartMethod::kSpawn);
    if (!p.Start().ok() || !p.Join().ok()) return 91;
    if (p.exitcode() != 7) return 92;
    return spawn_internal::LaunchCount(false) == vforks + 1 ? 0 : 93;
  });
  EXPECT_EQ(testing::Join(pid, 60), 0);
}

// A Start whose child started but never got its bootstrap (the send failed) kills and reaps
// that child and leaves the Process startable: the next Start runs it.
TEST(SpawnTest, AStartWhoseBootstrapSendFailedMayBeRetried) {
  Process p(ReturnSeven);
  p.SetStartMethod(StartMethod::kSpawn);
  spawn_internal::g_fail_bootstrap_send_for_testing = true;
  EXPECT_THAT(p.Start(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("bootstrap")));
  EXPECT_EQ(p.pid(), 0);
  EXPECT_THAT(ActiveChildren(), ::testing::IsEmpty());
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  EXPECT_EQ(p.exitcode(), 7);
}

// A descriptor argument that is not open is refused before any child starts (it used to fail
// the bootstrap's send with the child already running); once it is open again, Start works.
TEST(SpawnTest, AClosedDescriptorArgumentIsRefusedBeforeAChildStarts) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]);
  const int n = ::fcntl(pipe_fds[1], F_DUPFD_CLOEXEC, 100);
  ASSERT_GE(n, 0);
  Process p(WriteTo, UniqueFd(n), std::string("through"));
  p.SetStartMethod(StartMethod::kSpawn);
  ::close(n);  // behind the Process's back
  const int launches = spawn_internal::LaunchCount(true) + spawn_internal::LaunchCount(false);
  EXPECT_THAT(p.Start(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not open")));
  EXPECT_EQ(spawn_internal::LaunchCount(true) + spawn_internal::LaunchCount(false), launches);
  ASSERT_EQ(::dup3(pipe_fds[1], n, O_CLOEXEC), n);  // open again, the same write end
  ::close(pipe_fds[1]);
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  EXPECT_EQ(p.exitcode(), 0);
  char buf[16] = {};
  EXPECT_EQ(::read(read_end.get(), buf, sizeof buf), 7);
  EXPECT_STREQ(buf, "through");
}

TEST(SpawnTest, UsesClone3WhereAvailable) {
  if (!HasFeature(Feature::kClone3)) GTEST_SKIP() << "no clone3 here";
  int before = spawn_internal::LaunchCount(true);
  Process p(Noop);
  p.SetStartMethod(StartMethod::kSpawn);
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join());
  EXPECT_EQ(spawn_internal::LaunchCount(true), before + 1);
}

TEST(SpawnTest, SetStartMethodOnce) {
  EXPECT_EQ(GetStartMethod(), StartMethod::kForkServer);  // CPython 3.14's Linux default
  MPROC_ASSERT_OK(SetStartMethod(StartMethod::kSpawn));
  EXPECT_THAT(SetStartMethod(StartMethod::kFork),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already")));
  MPROC_EXPECT_OK(SetStartMethod(StartMethod::kFork, /*force=*/true));
  EXPECT_EQ(GetStartMethod(), StartMethod::kFork);
  MPROC_EXPECT_OK(SetStartMethod(StartMethod::kForkServer, /*force=*/true));
}

// A program that forgot mproc::Init: its spawned child (or fork server) reruns main(), must
// refuse to start another process, and the whole thing ends with exactly two processes having
// run main(). Returns the program's exit code; fills the main() count and stderr.
int RunNoInitProgram(const std::string& mode, int* mains, std::string* err_text) {
  const std::string tmp = std::getenv("TEST_TMPDIR");
  const std::string count_file = tmp + "/no_init_count_" + mode;
  ::unlink(count_file.c_str());
  std::vector<std::string> env = testing::EnvForNestedTest();
  env.push_back("MPROC_TEST_COUNT_FILE=" + count_file);
  const testing::ProgramOutcome r =
      testing::RunProgram({testing::Runfile("spawn/no_init_main"), mode}, tmp, 60, &env);
  std::ifstream counts(count_file);
  *mains = 0;
  for (std::string line; std::getline(counts, line);) ++*mains;
  *err_text = r.err;
  return r.exit_code;
}

TEST(SpawnTest, ForgottenInitIsAClearErrorNotRecursion) {
  int mains = 0;
  std::string err;
  // The spawned child refuses (exit 3), which the parent expects: exit 0.
  EXPECT_EQ(RunNoInitProgram("spawn", &mains, &err), 0);
  EXPECT_EQ(mains, 2);
  EXPECT_THAT(err, HasSubstr("mproc::Init(argc, argv)"));
}

TEST(SpawnTest, ForgottenInitUnderForkServerIsAClearErrorNotRecursion) {
  int mains = 0;
  std::string err;
  // The fork server reruns main() and refuses; the parent's Start fails and says why (exit 3).
  EXPECT_EQ(RunNoInitProgram("forkserver", &mains, &err), 3);
  EXPECT_EQ(mains, 2);
  EXPECT_THAT(err, HasSubstr("Does main() call mproc::Init(argc, argv) first?"));
}

}  // namespace
}  // namespace mproc

namespace mproc {
namespace {

// Exit code 0 when this process's parent is `server`, while ParentPid() names `requester`.
int CheckForkServerParentage(int32_t server, int32_t requester) {
  return ::getppid() == server && ParentPid() == requester ? 0 : 1;
}

int g_preloaded = 0;
void Preload() { g_preloaded = 42; }
int ReturnPreloaded() { return g_preloaded; }

int ThreadsOf(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

class ForkServerTest : public ::testing::Test {
 protected:
  void TearDown() override { ShutdownForkServer(); }
  std::optional<int> Run(Process& p) {
    p.SetStartMethod(StartMethod::kForkServer);
    absl::Status s = p.Start();
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return std::nullopt;
    EXPECT_TRUE(p.Join(absl::Seconds(60)).ok());
    return p.exitcode();
  }
};

int ExitWith(int code) { return code; }

// StartAll starts each process as its own Start would, forkserver ones in one batch of
// requests: every child runs its own target with its own arguments, in whatever start method
// it has, and a process that cannot start (started already) fails alone.
TEST_F(ForkServerTest, StartAllStartsEachProcessAndBatchesTheForkServerOnes) {
  std::vector<std::unique_ptr<Process>> procs;
  for (int i = 0; i < 4; ++i) {
    procs.push_back(std::make_unique<Process>(ExitWith, 10 + i));
    procs.back()->SetStartMethod(StartMethod::kForkServer);
  }
  procs.push_back(std::make_unique<Process>(ExitWith, 20));
  procs.back()->SetStartMethod(StartMethod::kSpawn);
  auto again = std::make_unique<Process>(ExitWith, 30);
  again->SetStartMethod(StartMethod::kForkServer);
  MPROC_ASSERT_OK(again->Start());
  std::vector<Process*> batch;
  for (auto& p : procs) batch.push_back(p.get());
  batch.push_back(again.get());
  std::vector<absl::Status> started = Process::StartAll(batch);
  ASSERT_EQ(started.size(), batch.size());
  for (size_t i = 0; i + 1 < started.size(); ++i) MPROC_EXPECT_OK(started[i]) << i;
  EXPECT_THAT(started.back(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("once")));
  std::set<pid_t> pids;
  for (size_t i = 0; i < procs.size(); ++i) {
    MPROC_ASSERT_OK(procs[i]->Join(absl::Seconds(30)));
    EXPECT_EQ(procs[i]->exitcode(), i < 4 ? 10 + static_cast<int>(i) : 20);
    pids.insert(procs[i]->pid());
  }
  EXPECT_EQ(pids.size(), procs.size());
  MPROC_ASSERT_OK(again->Join(absl::Seconds(30)));
  EXPECT_EQ(again->exitcode(), 30);
}

TEST_F(ForkServerTest, ChildsParentIsTheServerWhichHasOneThread) {
  Process warm(Noop);
  ASSERT_EQ(Run(warm), 0);
  pid_t server = ForkServerPid();
  ASSERT_GT(server, 0);
  EXPECT_EQ(ThreadsOf(server), 1);
  Process p(CheckForkServerParentage, static_cast<int32_t>(server),
            static_cast<int32_t>(::getpid()));
  EXPECT_EQ(Run(p), 0);
  EXPECT_EQ(ForkServerPid(), server);  // reused, not restarted
}

TEST_F(ForkServerTest, ADeadServerIsRestartedByTheNextStart) {
  Process first(ReturnSeven);
  ASSERT_EQ(Run(first), 7);
  pid_t server = ForkServerPid();
  ASSERT_GT(server, 0);
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  Process second(ReturnSeven);
  EXPECT_EQ(Run(second), 7);
  EXPECT_NE(ForkServerPid(), server);
  EXPECT_GT(ForkServerPid(), 0);
}

TEST_F(ForkServerTest, ServerDeathWhileAChildRunsIsExitCode255NotAHang) {
  Process p(SleepForever);
  p.SetStartMethod(StartMethod::kForkServer);
  MPROC_ASSERT_OK(p.Start());
  pid_t server = ForkServerPid();
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  EXPECT_EQ(p.exitcode(), 255);
  // The orphaned child still runs (as under CPython); end it through its pidfd.
  ASSERT_GE(p.sentinel(), 0);
  EXPECT_EQ(::syscall(SYS_pidfd_send_signal, p.sentinel(), SIGKILL, nullptr, 0), 0);
  ShutdownForkServer();  // reaps the killed server
}

TEST_F(ForkServerTest, PreloadRunsInTheServerBeforeForking) {
  SetForkServerPreload(Preload);
  Process p(ReturnPreloaded);
  EXPECT_EQ(Run(p), 42);
  SetForkServerPreload(nullptr);
  EXPECT_EQ(g_preloaded, 0);  // it ran in the server, not here
}

// The fork server's listening socket path: the one in /proc/net/unix whose inode is among the
// server's descriptors.
std::string ForkServerSocketPath() {
  std::set<std::string> inodes;
  const std::string fd_dir = "/proc/" + std::to_string(ForkServerPid()) + "/fd";
  if (DIR* d = ::opendir(fd_dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      char link[128] = {};
      if (::readlink((fd_dir + "/" + e->d_name).c_str(), link, sizeof(link) - 1) > 0 &&
          std::string(link).rfind("socket:[", 0) == 0) {
        std::string l(link);
        inodes.insert(l.substr(8, l.size() - 9));
      }
    }
    ::closedir(d);
  }
  std::ifstream unix_table("/proc/net/unix");
  std::string line;
  while (std::getline(unix_table, line)) {
    std::istringstream f(line);
    std::string num, ref, proto, flags, type, st, inode, path;
    if (f >> num >> ref >> proto >> flags >> type >> st >> inode >> path &&
        inodes.count(inode) && path.find("mproc-forkserver-") != std::string::npos) {
      return path;
    }
  }
  return "";
}

// Clients that connect to the fork server and never speak hold up no Start: the server runs
// their handshakes beside its work instead of waiting 10 s on each in turn.
TEST_F(ForkServerTest, SilentClientsDoNotHoldUpTheServer) {
  Process first(Noop);
  first.SetStartMethod(StartMethod::kForkServer);
  MPROC_ASSERT_OK(first.Start());
  MPROC_ASSERT_OK(first.Join(absl::Seconds(60)));
  const std::string path = ForkServerSocketPath();
  ASSERT_FALSE(path.empty());
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 3; ++i) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    silent.push_back(std::move(fd));
  }
  const double t0 = testing::NowSeconds();
  Process p(ReturnSeven);
  p.SetStartMethod(StartMethod::kForkServer);
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  EXPECT_EQ(p.exitcode(), 7);
  EXPECT_LT(testing::NowSeconds() - t0, 5.0);  // not 3 x the 10 s handshake timeout
}

TEST_F(ForkServerTest, DefaultStartMethodIsForkServer) {
  Process p(Noop);
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join());
  EXPECT_GT(ForkServerPid(), 0);
}

}  // namespace
}  // namespace mproc
