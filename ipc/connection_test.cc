#include "ipc/connection.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/queue.h"
#include "ipc/wait.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Job {
  int32_t id;
  std::string name;
  std::vector<double> weights;
  bool operator==(const Job&) const = default;
};
MPROC_CODEC_FIELDS(Job, id, name, weights)

TEST(ConnectionTest, SendRecvValuesAndBytes) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  Job job{7, "render", {0.5, 1.5}};
  MPROC_ASSERT_OK(a.Send(job));
  ASSERT_OK_AND_ASSIGN(Job got, b.Recv<Job>());
  EXPECT_EQ(got, job);
  MPROC_ASSERT_OK(b.Send(std::map<std::string, int>{{"x", 1}}));  // duplex: both ways
  ASSERT_OK_AND_ASSIGN(auto m, (a.Recv<std::map<std::string, int>>()));
  EXPECT_EQ(m.at("x"), 1);
  MPROC_ASSERT_OK(a.SendBytes("raw bytes"));
  ASSERT_OK_AND_ASSIGN(std::string raw, b.RecvBytes());
  EXPECT_EQ(raw, "raw bytes");
  EXPECT_GE(a.fileno(), 0);
  EXPECT_TRUE(a.readable() && a.writable());
}

TEST(ConnectionTest, BoundariesAreKeptAndEmptyMessagesCount) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  ASSERT_OK_AND_ASSIGN(bool ready, b.Poll());
  EXPECT_FALSE(ready);
  MPROC_ASSERT_OK(a.SendBytes(""));
  ASSERT_OK_AND_ASSIGN(ready, b.Poll());
  EXPECT_TRUE(ready);
  ASSERT_OK_AND_ASSIGN(ready, b.Poll());  // polling does not consume
  EXPECT_TRUE(ready);
  for (const char* s : {"a", "b", "cd"}) MPROC_ASSERT_OK(a.SendBytes(s));
  ASSERT_OK_AND_ASSIGN(std::string e, b.RecvBytes());
  EXPECT_EQ(e, "");
  for (const char* s : {"a", "b", "cd"}) {
    ASSERT_OK_AND_ASSIGN(std::string m, b.RecvBytes());
    EXPECT_EQ(m, s);
  }
}

TEST(ConnectionTest, PollWaitsAtLeastItsTimeout) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  double t0 = testing::NowSeconds();
  ASSERT_OK_AND_ASSIGN(bool ready, pair.second.Poll(absl::Milliseconds(100)));
  EXPECT_FALSE(ready);
  EXPECT_GE(testing::NowSeconds() - t0, 0.099);
  ASSERT_OK_AND_ASSIGN(ready, pair.second.Poll(absl::Seconds(-1)));  // negative: just look
  EXPECT_FALSE(ready);
}

TEST(ConnectionTest, LargeMessagesArriveIntact) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  std::string big(32 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + (i >> 13));
  std::thread writer([&] { EXPECT_TRUE(a.SendBytes(big).ok()); });
  ASSERT_OK_AND_ASSIGN(std::string got, b.RecvBytes());
  writer.join();
  EXPECT_TRUE(got == big);
}

TEST(ConnectionTest, ClosedPeerIsOutOfRangeAfterEveryMessage) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  MPROC_ASSERT_OK(a.SendBytes("last words"));
  a.Close();
  EXPECT_TRUE(a.closed());
  ASSERT_OK_AND_ASSIGN(std::string m, b.RecvBytes());
  EXPECT_EQ(m, "last words");
  ASSERT_OK_AND_ASSIGN(bool ready, b.Poll());
  EXPECT_TRUE(ready);  // end of file is "ready"
  EXPECT_THAT(b.RecvBytes(), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(b.SendBytes("anyone?"), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(a.SendBytes("x"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("closed")));
  EXPECT_THAT(a.RecvBytes(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(ConnectionTest, SimplexPipeHasDirectionsAndNoSigpipe) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe(/*duplex=*/false));
  auto& [reader, writer] = pair;
  EXPECT_TRUE(reader.readable());
  EXPECT_FALSE(reader.writable());
  EXPECT_FALSE(writer.readable());
  EXPECT_THAT(reader.SendBytes("x"), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("read-only")));
  EXPECT_THAT(writer.RecvBytes(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("write-only")));
  EXPECT_THAT(writer.Poll(), StatusIs(absl::StatusCode::kFailedPrecondition));
  MPROC_ASSERT_OK(writer.Send(int64_t{42}));
  ASSERT_OK_AND_ASSIGN(int64_t v, reader.Recv<int64_t>());
  EXPECT_EQ(v, 42);
  reader.Close();
  // The reader is gone: an error, not a SIGPIPE that kills the test.
  EXPECT_THAT(writer.SendBytes("into the void"), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(ConnectionTest, SendBytesSlicesAndValidates) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  std::string s = "0123456789";
  auto bytes = std::as_bytes(std::span(s.data(), s.size()));
  MPROC_ASSERT_OK(a.SendBytes(bytes, 2, 3));
  MPROC_ASSERT_OK(a.SendBytes(bytes, 7));
  MPROC_ASSERT_OK(a.SendBytes(bytes, 10));  // offset == len: an empty message
  EXPECT_THAT(a.SendBytes(bytes, 11), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(a.SendBytes(bytes, 5, 6), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(std::string m1, b.RecvBytes());
  ASSERT_OK_AND_ASSIGN(std::string m2, b.RecvBytes());
  ASSERT_OK_AND_ASSIGN(std::string m3, b.RecvBytes());
  EXPECT_EQ(m1, "234");
  EXPECT_EQ(m2, "789");
  EXPECT_EQ(m3, "");
}

TEST(ConnectionTest, RecvBytesIntoAndShortBuffers) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  MPROC_ASSERT_OK(a.SendBytes("hello"));
  std::vector<std::byte> buf(16, std::byte{'.'});
  ASSERT_OK_AND_ASSIGN(size_t n, b.RecvBytesInto(buf, 3));
  EXPECT_EQ(n, 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), 9), "...hello.");
  MPROC_ASSERT_OK(a.SendBytes("a message longer than the buffer"));
  absl::StatusOr<size_t> r = b.RecvBytesInto(std::span(buf).subspan(0, 8));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("too short")));
  auto payload = r.status().GetPayload(kMessagePayloadUrl);
  ASSERT_TRUE(payload.has_value());
  EXPECT_EQ(std::string(*payload), "a message longer than the buffer");
  MPROC_ASSERT_OK(a.SendBytes("next"));  // the long message was consumed; the stream is fine
  ASSERT_OK_AND_ASSIGN(std::string next, b.RecvBytes());
  EXPECT_EQ(next, "next");
}

TEST(ConnectionTest, OverlongMessageMarksTheConnectionUnreadable) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  MPROC_ASSERT_OK(a.SendBytes(std::string(100, 'x')));
  EXPECT_THAT(b.RecvBytes(10), StatusIs(absl::StatusCode::kResourceExhausted,
                                        HasSubstr("bad message length")));
  EXPECT_FALSE(b.readable());
  EXPECT_THAT(b.RecvBytes(), StatusIs(absl::StatusCode::kFailedPrecondition));
  MPROC_EXPECT_OK(b.SendBytes("still writable"));  // duplex: only reading is over
}

TEST(ConnectionTest, HandlesCrossDuplexConnections) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]);
  UniqueFd w(p[1]);
  // A high descriptor number, as CPython's large-fd test does.
  UniqueFd high(::fcntl(w.get(), F_DUPFD_CLOEXEC, 300));
  ASSERT_TRUE(high.ok());
  MPROC_ASSERT_OK(a.SendHandle(high.get()));
  ASSERT_OK_AND_ASSIGN(UniqueFd got, b.RecvHandle());
  ASSERT_EQ(::write(got.get(), "z", 1), 1);
  char c;
  ASSERT_EQ(::read(r.get(), &c, 1), 1);
  EXPECT_EQ(c, 'z');
  EXPECT_TRUE(::fcntl(got.get(), F_GETFD) & FD_CLOEXEC);
  // Data where a descriptor was expected.
  MPROC_ASSERT_OK(a.SendBytes("no fd here"));
  EXPECT_THAT(b.RecvHandle(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("without a descriptor")));
}

// A descriptor that is not open is refused before anything is announced to the peer: the
// send fails alone and the connection goes on carrying messages and descriptors (it used to
// leave the receiver waiting for a descriptor that never came).
// ... on a duplex Pipe and on a plain socket alike (a plain socket said FAILED_PRECONDITION).
TEST(ConnectionTest, ADescriptorThatIsNotOpenFailsItsSendAlone) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_OK_AND_ASSIGN(Connection plain_a, Connection::FromFd(UniqueFd(sv[0]), true, true));
  ASSERT_OK_AND_ASSIGN(Connection plain_b, Connection::FromFd(UniqueFd(sv[1]), true, true));
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  const int closed = p[1];
  ::close(closed);
  UniqueFd r(p[0]);
  std::pair<Connection*, Connection*> pairs[] = {{&pair.first, &pair.second},
                                                 {&plain_a, &plain_b}};
  for (auto [a, b] : pairs) {
    EXPECT_THAT(a->SendHandle(closed),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not open")));
    MPROC_ASSERT_OK(a->SendBytes("after"));
    ASSERT_OK_AND_ASSIGN(std::string m, b->RecvBytes(std::nullopt, absl::Seconds(5)));
    EXPECT_EQ(m, "after");
    MPROC_ASSERT_OK(a->SendHandle(r.get()));
    ASSERT_OK_AND_ASSIGN(UniqueFd got, b->RecvHandle(absl::Seconds(5)));
    EXPECT_TRUE(got.ok());
  }
}

// A long Send that times out partway (nobody reads) leaves the peer mid-message: that
// direction closes, so no later message is spliced into the cut-off one, and the reader sees
// end of file where the message breaks off instead of waiting for the rest. A plain socket
// connection does the same.
TEST(ConnectionTest, ASendThatTimesOutPartwayClosesThatDirection) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_OK_AND_ASSIGN(Connection plain_a, Connection::FromFd(UniqueFd(sv[0]), true, true));
  ASSERT_OK_AND_ASSIGN(Connection plain_b, Connection::FromFd(UniqueFd(sv[1]), true, true));
  struct Case {
    Connection* a;
    Connection* b;
  };
  for (Case c : {Case{&pair.first, &pair.second}, Case{&plain_a, &plain_b}}) {
    const std::string big(8 << 20, 'x');  // far more than the socket buffers
    EXPECT_THAT(c.a->SendBytes(big, absl::Milliseconds(50)),
                StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("direction")));
    EXPECT_THAT(c.a->SendBytes("small"), StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(c.b->RecvBytes(std::nullopt, absl::Seconds(5)).status(),
                StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("end of file after")));
    EXPECT_THAT(c.b->RecvBytes(std::nullopt, absl::Seconds(5)).status(),
                StatusIs(absl::StatusCode::kOutOfRange));
    // The other direction still works.
    MPROC_EXPECT_OK(c.b->SendBytes("back"));
    EXPECT_THAT(c.a->RecvBytes(std::nullopt, absl::Seconds(5)), IsOkAndHolds(std::string("back")));
  }
}

// A Recv that times out before a message begins consumes nothing, on a duplex Pipe (long
// messages travel on its socket) and on a plain socket connection; one that times out partway
// through a message ends reading, since the rest would pass for the next message.
TEST(ConnectionTest, RecvTimeoutsBeforeAMessageLoseNothingAndPartwayOnesEndReading) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Milliseconds(20)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  const std::string long_message(100 << 10, 'L');
  std::thread sender([&] {
    ::usleep(30'000);
    EXPECT_TRUE(a.SendBytes(long_message).ok());
  });
  absl::Status first = b.RecvBytes(std::nullopt, absl::Milliseconds(5)).status();
  EXPECT_TRUE(first.ok() || absl::IsDeadlineExceeded(first)) << first;
  ASSERT_OK_AND_ASSIGN(std::string got, b.RecvBytes(std::nullopt, absl::Seconds(10)));
  sender.join();
  EXPECT_TRUE(got == long_message);

  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd raw(sv[0]);
  ASSERT_OK_AND_ASSIGN(Connection c, Connection::FromFd(UniqueFd(sv[1]), true, true));
  EXPECT_THAT(c.RecvBytes(std::nullopt, absl::Milliseconds(20)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  const unsigned char whole[] = {0, 0, 0, 2, 'o', 'k'};
  ASSERT_EQ(::write(raw.get(), whole, sizeof(whole)), 6);
  EXPECT_THAT(c.RecvBytes(std::nullopt, absl::Seconds(5)), IsOkAndHolds(std::string("ok")));
  const unsigned char torn[] = {0, 0, 0, 100, 'p', 'a', 'r', 't'};  // 4 of 100 bytes
  ASSERT_EQ(::write(raw.get(), torn, sizeof(torn)), 8);
  EXPECT_THAT(c.RecvBytes(std::nullopt, absl::Milliseconds(50)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("can no longer be read")));
  // The next Recv says why reading ended, not that the end was never readable.
  absl::Status next = c.RecvBytes(std::nullopt, absl::Seconds(5)).status();
  EXPECT_THAT(next, StatusIs(absl::StatusCode::kFailedPrecondition,
                             HasSubstr("read direction of this connection was closed because "
                                       "the stream lost its framing")));
  EXPECT_THAT(next.message(), Not(HasSubstr("write-only")));
  EXPECT_TRUE(c.writable());
}

TEST(ConnectionTest, ValuesThatCarryDescriptors) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  ASSERT_OK_AND_ASSIGN(auto inner, Pipe());
  // A Connection sent over a Connection, used on the other side (CONN-11).
  MPROC_ASSERT_OK(a.Send(inner.first));
  ASSERT_OK_AND_ASSIGN(Connection moved, b.Recv<Connection>());
  inner.first.Close();
  MPROC_ASSERT_OK(moved.SendBytes("via a passed connection"));
  ASSERT_OK_AND_ASSIGN(std::string m, inner.second.RecvBytes());
  EXPECT_EQ(m, "via a passed connection");
  // Over a simplex pipe this is refused, not silently broken.
  ASSERT_OK_AND_ASSIGN(auto simplex, Pipe(false));
  EXPECT_THAT(simplex.second.Send(moved), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("socket")));
}

// A value whose type may carry descriptors but which carries none (an empty vector of them)
// arrives as such, and so do the messages after it, over a duplex Pipe and over a plain
// socket. Before, the receiver waited for a descriptor message, read the value's first byte
// in its place, and the connection could not be read any more (INVALID_ARGUMENT).
TEST(ConnectionTest, AValueThatCouldCarryDescriptorsButCarriesNone) {
  ASSERT_OK_AND_ASSIGN(auto duplex, Pipe());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_OK_AND_ASSIGN(Connection plain_a, Connection::FromFd(UniqueFd(sv[0]), true, true));
  ASSERT_OK_AND_ASSIGN(Connection plain_b, Connection::FromFd(UniqueFd(sv[1]), true, true));
  std::pair<Connection*, Connection*> pairs[] = {{&duplex.first, &duplex.second},
                                                 {&plain_a, &plain_b}};
  for (auto [a, b] : pairs) {
    MPROC_ASSERT_OK(a->Send(std::vector<UniqueFd>{}));
    ASSERT_OK_AND_ASSIGN(std::vector<UniqueFd> none,
                         b->Recv<std::vector<UniqueFd>>(absl::Seconds(10)));
    EXPECT_TRUE(none.empty());
    std::vector<UniqueFd> two;
    two.emplace_back(::eventfd(0, EFD_CLOEXEC));
    two.emplace_back(::eventfd(0, EFD_CLOEXEC));
    MPROC_ASSERT_OK(a->Send(two));
    ASSERT_OK_AND_ASSIGN(std::vector<UniqueFd> got,
                         b->Recv<std::vector<UniqueFd>>(absl::Seconds(10)));
    ASSERT_EQ(got.size(), 2u);
    EXPECT_TRUE(got[0].ok() && got[1].ok());
    MPROC_ASSERT_OK(a->Send(std::vector<UniqueFd>{}));
    MPROC_ASSERT_OK(a->Send(std::string("after")));
    ASSERT_OK_AND_ASSIGN(none, b->Recv<std::vector<UniqueFd>>(absl::Seconds(10)));
    EXPECT_TRUE(none.empty());
    EXPECT_THAT(b->Recv<std::string>(absl::Seconds(10)), IsOkAndHolds("after"));
  }
}

TEST(ConnectionTest, FromFdRejectsBadDescriptors) {
  EXPECT_THAT(Connection::FromFd(UniqueFd(-1)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Connection::FromFd(UniqueFd(987)), StatusIs(absl::StatusCode::kInvalidArgument));
  Connection empty;
  EXPECT_THAT(empty.Poll(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(ConnectionTest, RecvTimesOut) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  EXPECT_THAT(pair.second.RecvBytes(std::nullopt, absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  MPROC_ASSERT_OK(pair.first.SendBytes("after the timeout"));
  ASSERT_OK_AND_ASSIGN(std::string m, pair.second.RecvBytes());  // still in sync
  EXPECT_EQ(m, "after the timeout");
}

TEST(WaitTest, ReturnsTheReadySubset) {
  ASSERT_OK_AND_ASSIGN(auto p1, Pipe());
  ASSERT_OK_AND_ASSIGN(auto p2, Pipe());
  ASSERT_OK_AND_ASSIGN(auto p3, Pipe());
  MPROC_ASSERT_OK(p1.first.SendBytes("x"));
  p3.first.Close();  // end of file counts as ready
  ASSERT_OK_AND_ASSIGN(std::vector<int> ready,
                       Wait({p1.second.fileno(), p2.second.fileno(), p3.second.fileno()},
                            absl::Seconds(5)));
  EXPECT_THAT(ready, ::testing::ElementsAre(p1.second.fileno(), p3.second.fileno()));
  double t0 = testing::NowSeconds();
  ASSERT_OK_AND_ASSIGN(ready, Wait({p2.second.fileno()}, absl::Milliseconds(100)));
  EXPECT_TRUE(ready.empty());
  EXPECT_GE(testing::NowSeconds() - t0, 0.099);
  ASSERT_OK_AND_ASSIGN(ready, Wait({p2.second.fileno()}, absl::Seconds(-1)));
  EXPECT_TRUE(ready.empty());
  EXPECT_THAT(Wait({-1}), StatusIs(absl::StatusCode::kInvalidArgument));
}

// CPU seconds this thread has used: the scheduler's own count (/proc/thread-self/schedstat,
// nanoseconds on the CPU), not getrusage's tick samples, which can charge a whole tick to a
// thread that ran for microseconds on a loaded machine.
double ThreadCpuSeconds() {
  std::ifstream in("/proc/thread-self/schedstat");
  unsigned long long ns = 0;
  if (in >> ns) return static_cast<double>(ns) / 1e9;
  rusage u;
  ::getrusage(RUSAGE_THREAD, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// A wait that times out sleeps in the kernel: under 10 ms of CPU for a 1 s timeout (the brief
// spin before blocking is 50 us), for Wait(), Connection::Recv and Queue::Get, in every I/O mode.
TEST(WaitTest, TimingOutUsesNoCpuWhileWaiting) {
  ASSERT_OK_AND_ASSIGN(auto pipe, Pipe());
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
  double cpu = ThreadCpuSeconds();
  ASSERT_OK_AND_ASSIGN(std::vector<int> ready, Wait({pipe.first.fileno()}, absl::Seconds(1)));
  EXPECT_TRUE(ready.empty());
  EXPECT_LT(ThreadCpuSeconds() - cpu, 0.010) << "Wait";
  cpu = ThreadCpuSeconds();
  EXPECT_THAT(pipe.first.RecvBytes(std::nullopt, absl::Seconds(1)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(ThreadCpuSeconds() - cpu, 0.010) << "Connection::RecvBytes";
  cpu = ThreadCpuSeconds();
  EXPECT_THAT(q.Get(absl::Seconds(1)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(ThreadCpuSeconds() - cpu, 0.010) << "Queue::Get";
}

}  // namespace
}  // namespace mproc
