#include "base/syscall.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "base/status_matchers.h"
#include "base/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

struct PipePair {
  UniqueFd r, w;
};
PipePair MakePipe(int flags = O_CLOEXEC) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, flags), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::vector<char> Pattern(size_t n) {
  std::vector<char> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<char>(i * 31 + 7);
  return v;
}

TEST(SyscallTest, FullReadWriteMoveMoreThanThePipeBuffer) {
  PipePair p = MakePipe();
  const std::vector<char> data = Pattern(1 << 20);  // 16x the default pipe buffer
  std::thread writer([&] {
    EXPECT_EQ(WriteFull(p.w.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
    p.w.Reset();
  });
  std::vector<char> got(data.size() + 10);
  ssize_t n = ReadFull(p.r.get(), got.data(), got.size());
  writer.join();
  ASSERT_EQ(n, static_cast<ssize_t>(data.size()));  // short only at EOF
  got.resize(static_cast<size_t>(n));
  EXPECT_EQ(got, data);
}

TEST(SyscallTest, ReadFullReportsErrno) {
  char c;
  EXPECT_EQ(ReadFull(-1, &c, 1), -EBADF);
  EXPECT_EQ(WriteFull(-1, &c, 1), -EBADF);
}

// A write bigger than the socket or pipe buffer, to a blocking descriptor nobody reads, ends
// at its deadline with what went through: it must never block in one send() or write() past
// it (a blocking send of 8 MiB used to wait for a reader forever).
TEST(SyscallTest, WriteAllHonoursItsDeadlineOnBlockingDescriptors) {
  const std::string big(8 << 20, 'w');
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]);
  UniqueFd b(sv[1]);
  PipePair p = MakePipe();
  for (int fd : {a.get(), p.w.get()}) {
    const int64_t t0 = MonotonicNowNs();
    absl::Status s = WriteAll(fd, big.data(), big.size(), Deadline::After(absl::Milliseconds(50)),
                              "write(x)");
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("of 8388608")));
    EXPECT_LT(MonotonicNowNs() - t0, 5'000'000'000) << "blocked past its deadline";
  }
}

TEST(SyscallTest, ReadExactTimesOutAsDeadlineExceeded) {
  PipePair p = MakePipe();
  ASSERT_EQ(::write(p.w.get(), "ab", 2), 2);
  char buf[4];
  int64_t t0 = MonotonicNowNs();
  absl::Status s = ReadExact(p.r.get(), buf, 4, Deadline::After(absl::Milliseconds(100)), "read(x)");
  int64_t waited = MonotonicNowNs() - t0;
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("2 of 4")));
  EXPECT_GE(waited, 100'000'000);  // a lower bound only
}

TEST(SyscallTest, ReadExactEndOfFileIsOutOfRange) {
  PipePair p = MakePipe();
  ASSERT_EQ(::write(p.w.get(), "abc", 3), 3);
  p.w.Reset();
  char buf[8];
  EXPECT_THAT(ReadExact(p.r.get(), buf, 8, Deadline::Infinite(), "read(frame)"),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("3 of 8")));
}

TEST(SyscallTest, ReadExactOnNonBlockingFdWaits) {
  PipePair p = MakePipe(O_CLOEXEC | O_NONBLOCK);
  std::thread writer([&] {
    ::usleep(20'000);
    EXPECT_EQ(::write(p.w.get(), "hello", 5), 5);
  });
  char buf[5];
  MPROC_EXPECT_OK(ReadExact(p.r.get(), buf, 5, Deadline::After(absl::Seconds(30)), "read"));
  writer.join();
  EXPECT_EQ(std::string(buf, 5), "hello");
}

TEST(SyscallTest, WriteAllToClosedPeerIsOutOfRange) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  b.Reset();
  // MSG_NOSIGNAL: no SIGPIPE kills the test.
  EXPECT_THAT(WriteAll(a.get(), "x", 1, Deadline::Infinite(), "send(conn)"),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("send(conn)")));
}

TEST(SyscallTest, WriteAllTimesOutOnFullPipe) {
  PipePair p = MakePipe(O_CLOEXEC | O_NONBLOCK);
  std::vector<char> big = Pattern(4 << 20);
  EXPECT_THAT(WriteAll(p.w.get(), big.data(), big.size(), Deadline::After(absl::Milliseconds(50)),
                       "write(pipe)"),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

std::atomic<int> g_signals{0};
void CountSignal(int) { g_signals.fetch_add(1); }

TEST(SyscallTest, ReadFullRetriesEintr) {
  struct sigaction sa = {};
  sa.sa_handler = CountSignal;
  sa.sa_flags = 0;  // no SA_RESTART: read() really returns EINTR
  struct sigaction old;
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  PipePair p = MakePipe();
  pthread_t reader_thread = ::pthread_self();
  std::atomic<bool> done{false};
  std::thread poker([&] {
    for (int i = 0; i < 5; ++i) {
      ::usleep(10'000);
      ::pthread_kill(reader_thread, SIGUSR1);
    }
    EXPECT_EQ(::write(p.w.get(), "z", 1), 1);
    while (!done.load()) ::usleep(1000);
  });
  char c = 0;
  EXPECT_EQ(ReadFull(p.r.get(), &c, 1), 1);
  done.store(true);
  poker.join();
  EXPECT_EQ(c, 'z');
  EXPECT_GE(g_signals.load(), 1);
  ::sigaction(SIGUSR1, &old, nullptr);
}

TEST(SyscallTest, SetNonBlocking) {
  PipePair p = MakePipe();
  EXPECT_EQ(SetNonBlocking(p.r.get(), true), 0);
  EXPECT_TRUE(::fcntl(p.r.get(), F_GETFL) & O_NONBLOCK);
  char c;
  EXPECT_EQ(::read(p.r.get(), &c, 1), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(SetNonBlocking(p.r.get(), false), 0);
  EXPECT_FALSE(::fcntl(p.r.get(), F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(SetNonBlocking(-1, true), -EBADF);
}

TEST(SyscallTest, WaitReadable) {
  PipePair p = MakePipe();
  EXPECT_EQ(WaitReadable(p.r.get(), Deadline::After(absl::Milliseconds(10))), 0);
  ASSERT_EQ(::write(p.w.get(), "q", 1), 1);
  EXPECT_EQ(WaitReadable(p.r.get(), Deadline::Infinite()), 1);
  EXPECT_EQ(WaitWritable(p.w.get(), Deadline::Infinite()), 1);
}

}  // namespace
}  // namespace mproc
