#include "base/io_ring.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "base/features.h"
#include "base/futex.h"
#include "base/seccomp_for_testing.h"
#include "base/test_util.h"
#include "base/unique_fd.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

const IoMode kModes[] = {IoMode::kPlain, IoMode::kUringBasic, IoMode::kUring};

// Runs each case in every mode this kernel gives (and restores the mode afterwards).
class IoRingTest : public ::testing::TestWithParam<IoMode> {
 protected:
  void SetUp() override {
    saved_ = ActiveIoMode();
    if (static_cast<int>(GetParam()) > static_cast<int>(BestIoMode())) {
      GTEST_SKIP() << IoModeName(GetParam()) << " is not available here: "
                   << DescribeFeatures();
    }
    ASSERT_EQ(SetIoMode(GetParam()), GetParam());
  }
  void TearDown() override { SetIoMode(saved_); }
  IoMode saved_ = IoMode::kPlain;
};

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    r = UniqueFd(fds[0]);
    w = UniqueFd(fds[1]);
  }
};

TEST(IoModeTest, NamesRoundTrip) {
  for (IoMode m : kModes) EXPECT_EQ(ParseIoMode(IoModeName(m)), m);
  EXPECT_EQ(ParseIoMode("auto"), kDefaultIoMode);
  EXPECT_EQ(ParseIoMode("io_uring"), std::nullopt);
}

TEST(IoModeTest, ActiveModeFollowsTheEnvironmentLoweredToTheKernel) {
  // Each ipc suite runs once per MPROC_IO_MODE value (ipc/BUILD); this checks the resolution.
  const char* env = ::getenv("MPROC_IO_MODE");
  IoMode want = env ? ParseIoMode(env).value_or(kDefaultIoMode) : kDefaultIoMode;
  IoMode best = BestIoMode();
  IoMode expect = static_cast<int>(want) <= static_cast<int>(best) ? want : best;
  EXPECT_EQ(ActiveIoMode(), expect);
}

// "Chosen" is a named mode in the environment (this binary runs with and without one), not
// auto; SetIoMode chooses.
TEST(IoModeTest, ChosenOnlyWhenNamed) {
  const char* env = ::getenv("MPROC_IO_MODE");
  const bool named = env != nullptr && std::string(env) != "auto" && ParseIoMode(env).has_value();
  EXPECT_EQ(IoModeChosen(), named);
  SetIoMode(ActiveIoMode());
  EXPECT_TRUE(IoModeChosen());
}

TEST_P(IoRingTest, WaitEventsReportsReadinessTimeoutsAndClosedDescriptors) {
  Pipe a, b;
  const IoRingCounters before = GetIoRingCounters();
  pollfd p[2] = {{a.r.get(), POLLIN, 0}, {b.r.get(), POLLIN, 0}};
  double t0 = testing::NowSeconds();
  EXPECT_EQ(WaitEvents(p, Deadline::After(absl::Milliseconds(50))), 0);
  EXPECT_GE(testing::NowSeconds() - t0, 0.049);

  ASSERT_EQ(::write(b.w.get(), "x", 1), 1);
  EXPECT_EQ(WaitEvents(p, Deadline::After(absl::Seconds(5))), 1);
  EXPECT_EQ(p[0].revents, 0);
  EXPECT_TRUE(p[1].revents & POLLIN);

  // Woken by a write from another thread while blocked with no deadline.
  char c;
  ASSERT_EQ(::read(b.r.get(), &c, 1), 1);
  std::thread writer([&] {
    ::usleep(20'000);
    (void)!::write(a.w.get(), "y", 1);
  });
  EXPECT_EQ(WaitEvents(p, Deadline::Infinite()), 1);
  writer.join();
  EXPECT_TRUE(p[0].revents & POLLIN);
  EXPECT_EQ(p[1].revents, 0);

  // Hang-up counts as ready; a closed descriptor is POLLNVAL.
  b.w.Reset();
  EXPECT_GE(WaitEvents(p, Deadline::After(absl::Seconds(5))), 1);
  EXPECT_TRUE(p[1].revents & POLLHUP);
  Pipe c2;
  int stale = c2.r.get();
  c2.r.Reset();
  pollfd q = {stale, POLLIN, 0};
  EXPECT_EQ(WaitEvents(std::span<pollfd>(&q, 1), Deadline::After(absl::Seconds(5))), 1);
  EXPECT_TRUE(q.revents & POLLNVAL);

  const IoRingCounters after = GetIoRingCounters();
  if (GetParam() == IoMode::kPlain) {
    EXPECT_EQ(after.submissions, before.submissions);
  } else {
    EXPECT_GE(after.submissions, before.submissions + 8);
  }
}

TEST_P(IoRingTest, ManyDescriptorsBeyondOneRingWaitStillWork) {
  std::vector<Pipe> pipes(100);
  std::vector<pollfd> p;
  for (Pipe& x : pipes) p.push_back({x.r.get(), POLLIN, 0});
  ASSERT_EQ(::write(pipes[97].w.get(), "z", 1), 1);
  EXPECT_EQ(WaitEvents(std::span<pollfd>(p), Deadline::After(absl::Seconds(5))), 1);
  EXPECT_TRUE(p[97].revents & POLLIN);
}

TEST_P(IoRingTest, SendMessagesKeepsOrderAndStopsAtAFullBuffer) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd rx(sv[0]), tx(sv[1]);
  int small = 4096;
  ASSERT_EQ(::setsockopt(tx.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  std::vector<uint32_t> values(40);
  std::vector<iovec> iov(values.size());
  std::vector<msghdr> msgs(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = static_cast<uint32_t>(i * 3 + 1);
    iov[i] = {&values[i], sizeof(uint32_t)};
    msgs[i] = {};
    msgs[i].msg_iov = &iov[i];
    msgs[i].msg_iovlen = 1;
  }
  // Send until the small buffer refuses; everything accepted arrives once, in order.
  size_t sent = 0;
  int last = 0;
  while (sent < values.size()) {
    last = SendMessages(tx.get(), std::span<msghdr>(msgs).subspan(sent));
    if (last <= 0) break;
    sent += static_cast<size_t>(last);
  }
  ASSERT_GT(sent, 0u);
  if (sent < values.size()) {
    EXPECT_EQ(last, -EAGAIN);
  }
  for (size_t i = 0; i < sent; ++i) {
    uint32_t v = 0;
    ASSERT_EQ(::recv(rx.get(), &v, sizeof(v), MSG_DONTWAIT), 4);
    EXPECT_EQ(v, values[i]) << i;
  }
  uint32_t v;
  EXPECT_EQ(::recv(rx.get(), &v, sizeof(v), MSG_DONTWAIT), -1);
  // A peer that is gone is EPIPE for the first message.
  rx.Reset();
  EXPECT_EQ(SendMessages(tx.get(), std::span<msghdr>(msgs).subspan(0, 3)), -EPIPE);
}

TEST_P(IoRingTest, FutexAndDescriptorsInOneWait) {
  if (GetParam() != IoMode::kUring) {
    EXPECT_FALSE(CanWaitFutexWithFds());
    std::atomic<uint32_t> w{0};
    bool woken;
    EXPECT_EQ(WaitEventsOrFutex({}, &w, 0, Deadline::After(absl::Milliseconds(1)), &woken),
              -EOPNOTSUPP);
    return;
  }
  ASSERT_TRUE(CanWaitFutexWithFds());
  std::atomic<uint32_t> word{7};
  Pipe a;
  pollfd p = {a.r.get(), POLLIN, 0};
  bool woken = true;
  const uint64_t futex_before = GetIoRingCounters().futex_waits;
  // Timeout.
  EXPECT_EQ(WaitEventsOrFutex(std::span<pollfd>(&p, 1), &word, 7,
                              Deadline::After(absl::Milliseconds(30)), &woken),
            0);
  EXPECT_FALSE(woken);
  // The word already differs: returns at once.
  EXPECT_EQ(WaitEventsOrFutex(std::span<pollfd>(&p, 1), &word, 6, Deadline::Infinite(), &woken),
            1);
  EXPECT_TRUE(woken);
  // A FutexWake from another thread.
  std::thread waker([&] {
    ::usleep(20'000);
    word.store(8);
    FutexWake(&word, 1);
  });
  EXPECT_EQ(WaitEventsOrFutex(std::span<pollfd>(&p, 1), &word, 7, Deadline::Infinite(), &woken),
            1);
  waker.join();
  EXPECT_TRUE(woken);
  EXPECT_EQ(p.revents, 0);
  // The descriptor.
  ASSERT_EQ(::write(a.w.get(), "x", 1), 1);
  EXPECT_EQ(WaitEventsOrFutex(std::span<pollfd>(&p, 1), &word, 8, Deadline::Infinite(), &woken),
            1);
  EXPECT_FALSE(woken);
  EXPECT_TRUE(p.revents & POLLIN);
  EXPECT_EQ(GetIoRingCounters().futex_waits, futex_before + 4);
}

TEST_P(IoRingTest, AForkChildMakesItsOwnRingAndTheParentKeepsItsOwn) {
  Pipe a;
  pollfd p = {a.r.get(), POLLIN, 0};
  EXPECT_EQ(WaitEvents(std::span<pollfd>(&p, 1), Deadline::After(absl::Milliseconds(1))), 0);
  pid_t pid = testing::Child([&] {
    Pipe b;
    pollfd q = {b.r.get(), POLLIN, 0};
    if (WaitEvents(std::span<pollfd>(&q, 1), Deadline::After(absl::Milliseconds(5))) != 0) return 1;
    if (::write(b.w.get(), "c", 1) != 1) return 2;
    if (WaitEvents(std::span<pollfd>(&q, 1), Deadline::After(absl::Seconds(5))) != 1) return 3;
    return (q.revents & POLLIN) ? 0 : 4;
  });
  EXPECT_EQ(testing::Join(pid), 0);
  ASSERT_EQ(::write(a.w.get(), "p", 1), 1);
  EXPECT_EQ(WaitEvents(std::span<pollfd>(&p, 1), Deadline::After(absl::Seconds(5))), 1);
}

// A wait made at exit, after this thread's ring was torn down with its other thread_locals
// (glibc runs those before atexit handlers), falls back to poll(2): the Process's atexit join
// waits on its fork server so.
int g_exit_wait_fd = -1;
void WaitAtExit() {
  pollfd q = {g_exit_wait_fd, POLLIN, 0};
  if (WaitEvents(std::span<pollfd>(&q, 1), Deadline::After(absl::Seconds(5))) != 1) ::_exit(5);
  if (!(q.revents & POLLIN)) ::_exit(6);
}

TEST_P(IoRingTest, AWaitInAnAtexitHandlerAfterTheRingIsGone) {
  pid_t pid = testing::Child([] {
    Pipe b;
    ::atexit(WaitAtExit);
    pollfd q = {b.r.get(), POLLIN, 0};
    // Makes this thread's ring (in the io_uring modes).
    if (WaitEvents(std::span<pollfd>(&q, 1), Deadline::After(absl::Milliseconds(1))) != 0) return 1;
    if (::write(b.w.get(), "x", 1) != 1) return 2;
    g_exit_wait_fd = b.r.Release();
    std::exit(0);
    return 3;
  });
  EXPECT_EQ(testing::Join(pid), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, IoRingTest, ::testing::ValuesIn(kModes),
                         [](const auto& info) { return std::string(IoModeName(info.param)); });

// io_uring_setup denied as Docker, other seccomp profiles and sandboxes deny it: every mode
// lowers to plain, waits still work, and nothing is submitted.
TEST(IoModeTest, DeniedIoUringFallsBackToPlainForEachErrno) {
  for (int err : {ENOSYS, EPERM, EOPNOTSUPP}) {
    pid_t pid = testing::Child([err] {
      if (InstallSeccompErrno(__NR_io_uring_setup, err) != 0) return 99;
      ResetFeatureCacheForTesting();
      if (BestIoMode() != IoMode::kPlain) return 1;
      if (SetIoMode(IoMode::kUring) != IoMode::kPlain) return 2;
      const uint64_t before = GetIoRingCounters().submissions;
      int fds[2];
      if (::pipe(fds) != 0) return 3;
      if (::write(fds[1], "x", 1) != 1) return 4;
      pollfd p = {fds[0], POLLIN, 0};
      if (WaitEvents(std::span<pollfd>(&p, 1), Deadline::After(absl::Seconds(5))) != 1) return 5;
      return GetIoRingCounters().submissions == before ? 0 : 6;
    });
    EXPECT_EQ(testing::Join(pid), 0) << "errno " << err;
  }
}

}  // namespace
}  // namespace mproc
