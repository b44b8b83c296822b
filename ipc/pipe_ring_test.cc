// The duplex Pipe's shared-memory rings (ipc/internal/ring_link.h), between real processes: order and
// integrity across the ring and socket paths, a full ring, a foreign poller on fileno(),
// killed peers and killed senders, senders sharing an end, and a corrupted ring.

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/io_ring.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/connection.h"
#include "ipc/internal/ring_link.h"
#include "shm/segment.h"

namespace mproc {
namespace {

using ::mproc::testing::Child;
using ::mproc::testing::Join;
using ::testing::HasSubstr;

// Message `seq` of sender `sender`: its size cycles through both sides of the ring/socket
// boundary, and every byte depends on both numbers.
std::string Message(int sender, int seq) {
  static constexpr size_t kSizes[] = {0,     1,      7,     100,       4096,
                                      32768, 32769,  1000,  200 << 10, 16};
  std::string m(kSizes[(seq + sender) % std::size(kSizes)] + 8, '\0');
  std::memcpy(m.data(), &sender, 4);
  std::memcpy(m.data() + 4, &seq, 4);
  for (size_t i = 8; i < m.size(); ++i) m[i] = static_cast<char>(i * 31 + seq * 7 + sender);
  return m;
}

bool Readable(int fd) {
  pollfd p = {fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

TEST(PipeRingTest, OrderAndBytesHoldAcrossRingSocketAndHandles) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  constexpr int kCount = 3000;
  pid_t pid = Child([&] {
    b.Close();
    for (int i = 0; i < kCount; ++i) {
      if (!a.SendBytes(Message(0, i)).ok()) return 1;
      if (i % 100 == 0) {
        UniqueFd ev(::eventfd(static_cast<unsigned>(i + 1), EFD_CLOEXEC));
        if (!a.SendHandle(ev.get()).ok()) return 2;
      }
    }
    return 0;
  });
  a.Close();
  ::usleep(200'000);  // the ring fills and the sender waits for room
  for (int i = 0; i < kCount; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string m, b.RecvBytes(std::nullopt, absl::Seconds(30)));
    ASSERT_EQ(m, Message(0, i)) << "message " << i;
    if (i % 100 == 0) {
      ASSERT_OK_AND_ASSIGN(UniqueFd ev, b.RecvHandle(absl::Seconds(30)));
      uint64_t v = 0;
      ASSERT_EQ(::read(ev.get(), &v, sizeof(v)), 8);
      EXPECT_EQ(v, static_cast<uint64_t>(i + 1));
    }
  }
  EXPECT_EQ(Join(pid), 0);
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(10)), StatusIs(absl::StatusCode::kOutOfRange));
}

// A poll() of your own on fileno() is readable exactly while something waits: messages sent
// before fileno() was taken, each later one, long ones, descriptors and end of file.
TEST(PipeRingTest, ForeignPollerSeesEveryMessageAndNoStaleReadiness) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  MPROC_ASSERT_OK(a.SendBytes("before 1"));
  MPROC_ASSERT_OK(a.SendBytes("before 2"));
  const int fd = b.fileno();
  ASSERT_GE(fd, 0);
  EXPECT_EQ(b.fileno(), fd);
  EXPECT_TRUE(Readable(fd));
  ASSERT_OK_AND_ASSIGN(std::string m, b.RecvBytes());
  EXPECT_EQ(m, "before 1");
  EXPECT_TRUE(Readable(fd));
  ASSERT_OK_AND_ASSIGN(m, b.RecvBytes());
  EXPECT_EQ(m, "before 2");
  EXPECT_FALSE(Readable(fd));
  for (int i = 0; i < 50; ++i) {
    MPROC_ASSERT_OK(a.SendBytes(Message(1, i)));
    MPROC_ASSERT_OK(a.SendBytes(Message(2, i)));
    EXPECT_TRUE(Readable(fd)) << i;
    ASSERT_OK_AND_ASSIGN(m, b.RecvBytes());
    EXPECT_EQ(m, Message(1, i));
    EXPECT_TRUE(Readable(fd)) << i;
    ASSERT_OK_AND_ASSIGN(m, b.RecvBytes());
    EXPECT_EQ(m, Message(2, i));
    EXPECT_FALSE(Readable(fd)) << i;
  }
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
  MPROC_ASSERT_OK(a.SendHandle(ev.get()));
  EXPECT_TRUE(Readable(fd));
  ASSERT_OK_AND_ASSIGN(UniqueFd got, b.RecvHandle());
  EXPECT_FALSE(Readable(fd));
  a.Close();
  EXPECT_TRUE(Readable(fd));  // end of file
  EXPECT_THAT(b.RecvBytes(), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(PipeRingTest, KilledReceiverFailsABlockedSender) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  pid_t pid = Child([&] {
    a.Close();
    ::pause();
    return 0;
  });
  b.Close();
  const std::string chunk(1000, 'c');
  int sent = 0;
  for (;;) {
    absl::Status s = a.SendBytes(chunk, absl::Milliseconds(100));
    if (absl::IsDeadlineExceeded(s)) break;
    MPROC_ASSERT_OK(s);
    ASSERT_LT(++sent, 10000) << "the ring never filled";
  }
  EXPECT_GT(sent, 50);
  absl::Status blocked;
  std::thread sender([&] { blocked = a.SendBytes(chunk); });
  ::usleep(100'000);
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  sender.join();
  EXPECT_THAT(blocked, StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(a.SendBytes("x"), StatusIs(absl::StatusCode::kOutOfRange));
}

// A receiver killed inside Recv left its "inside Recv" flag set, and a sender skips the
// hang-up check while that flag is up (a live receiver holds the peer end open): sends to the
// dead peer succeeded until the 128 KiB ring filled, and after one send reported the hang-up
// (through the bell), the next ones succeeded again. Now every send after the first failure
// is OUT_OF_RANGE, and in the plain I/O mode the second send after the death fails at the
// latest. (In the io_uring modes the dead receiver's ring holds its socket open until the
// kernel tears the ring down, a few milliseconds later: the sends fail from then on.)
TEST(PipeRingTest, SendsToAReceiverKilledInsideRecvFailSoon) {
  for (int round = 0; round < 4; ++round) {
    ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
    auto& [a, b] = pair;
    pid_t pid = Child([&] {
      a.Close();
      for (;;) {  // answers each message; inside Recv the rest of the time
        absl::StatusOr<std::string> m = b.RecvBytes();
        if (!m.ok() || !b.SendBytes("ack").ok()) return 1;
      }
    });
    b.Close();
    for (int i = 0; i < 3; ++i) {
      MPROC_ASSERT_OK(a.SendBytes("ping"));
      ASSERT_THAT(a.RecvBytes(std::nullopt, absl::Seconds(30)), IsOkAndHolds("ack"));
    }
    if (round % 2 == 1) ::usleep(20'000);  // asleep in poll() by now; else still spinning
    ::kill(pid, SIGKILL);
    EXPECT_EQ(Join(pid), 128 + SIGKILL);
    int first_failure = -1;
    for (int i = 0; i < 2000; ++i) {
      if (i > 0 && first_failure < 0) ::usleep(1000);
      absl::Status s = a.SendBytes("into the void");
      if (first_failure < 0 && !s.ok()) {
        EXPECT_THAT(s, StatusIs(absl::StatusCode::kOutOfRange)) << "send " << i;
        first_failure = i;
      } else if (first_failure >= 0) {
        EXPECT_THAT(s, StatusIs(absl::StatusCode::kOutOfRange))
            << "send " << i << " succeeded after send " << first_failure << " failed";
      }
    }
    EXPECT_GE(first_failure, 0) << "2000 sends to a dead receiver all succeeded (2 s)";
    if (ActiveIoMode() == IoMode::kPlain) {
      EXPECT_LE(first_failure, 1) << "round " << round;
    }
  }
}

// With the receiver's fileno() taken, every message rings a bell byte on the socket, and a
// receiver that does not read fills the socket with them. A Send whose bell could not be
// written in time reported DEADLINE_EXCEEDED for a message it had already published (so it
// was delivered anyway, and its bell record waited for a byte that never came). Now such a
// Send publishes nothing: each message is delivered exactly when its Send said OK, and the
// connection goes on.
TEST(PipeRingTest, ASendTimedOutOnAFullBellSocketPublishesNothing) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  ASSERT_GE(b.fileno(), 0);  // every message now rings a bell
  int ok = 0;
  absl::Status failed;
  for (int i = 0; i < 100000; ++i) {
    absl::Status s = a.SendBytes(std::to_string(i), absl::Milliseconds(20));
    if (!s.ok()) {
      failed = s;
      break;
    }
    ++ok;
  }
  ASSERT_THAT(failed, StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_GT(ok, 10);
  // A descriptor times out before it is announced, too: the direction is not torn.
  UniqueFd ev(::eventfd(0, EFD_CLOEXEC));
  EXPECT_THAT(a.SendHandle(ev.get(), absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  for (int i = 0; i < ok; ++i) {
    ASSERT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(10)), IsOkAndHolds(std::to_string(i)));
  }
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded))
      << "the message whose Send failed was delivered (" << ok << " sent; it said "
      << failed << ")";
  MPROC_ASSERT_OK(a.SendBytes("after", absl::Seconds(10)));
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(10)), IsOkAndHolds("after"));
  MPROC_ASSERT_OK(a.SendHandle(ev.get(), absl::Seconds(10)));
  ASSERT_OK_AND_ASSIGN(UniqueFd got, b.RecvHandle());
  EXPECT_GE(got.get(), 0);
}

TEST(PipeRingTest, KilledSenderEndsAWaitingReceiver) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  pid_t pid = Child([&] {
    b.Close();
    if (!a.SendBytes("one").ok()) return 1;
    ::pause();
    return 0;
  });
  a.Close();
  ASSERT_OK_AND_ASSIGN(std::string m, b.RecvBytes(std::nullopt, absl::Seconds(30)));
  EXPECT_EQ(m, "one");
  std::thread killer([&] {
    ::usleep(100'000);
    ::kill(pid, SIGKILL);
  });
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(30)),
              StatusIs(absl::StatusCode::kOutOfRange));
  killer.join();
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
}

// Two child processes and a thread of this one send on the same end at once: every message
// arrives whole, each sender's in its order.
TEST(PipeRingTest, SendersSharingAnEndTakeTurns) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  constexpr int kPerSender = 1500;
  std::vector<pid_t> pids;
  for (int sender = 1; sender <= 2; ++sender) {
    pids.push_back(Child([&, sender] {
      b.Close();
      for (int i = 0; i < kPerSender; ++i) {
        if (!a.SendBytes(Message(sender, i)).ok()) return 1;
      }
      return 0;
    }));
  }
  std::thread local([&] {
    for (int i = 0; i < kPerSender; ++i) ASSERT_TRUE(a.SendBytes(Message(3, i)).ok());
  });
  std::map<int, int> next;
  for (int n = 0; n < 3 * kPerSender; ++n) {
    ASSERT_OK_AND_ASSIGN(std::string m, b.RecvBytes(std::nullopt, absl::Seconds(30)));
    ASSERT_GE(m.size(), 8u);
    int sender, seq;
    std::memcpy(&sender, m.data(), 4);
    std::memcpy(&seq, m.data() + 4, 4);
    ASSERT_TRUE(sender >= 1 && sender <= 3) << sender;
    ASSERT_EQ(seq, next[sender]) << "sender " << sender;
    ASSERT_EQ(m, Message(sender, seq));
    ++next[sender];
  }
  local.join();
  for (pid_t pid : pids) EXPECT_EQ(Join(pid), 0);
  EXPECT_THAT(b.Poll(), IsOkAndHolds(false));
}

// A sender killed while it waits for room holds the end's turn; the next sender takes it over
// and nothing the dead one published is lost or torn. (Messages that fit the ring; for one
// killed halfway through a long message on the socket, see the next test.)
TEST(PipeRingTest, SenderKilledHoldingTheTurnIsTakenOver) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  auto message = [](int i) { return std::string(1000, static_cast<char>('a' + i % 26)); };
  pid_t pid = Child([&] {
    b.Close();
    for (int i = 0;; ++i) {
      if (!a.SendBytes(message(i)).ok()) return 1;
    }
  });
  // The ring is full and the child waits inside Send (the only place it can sleep).
  ASSERT_TRUE(testing::WaitUntilAsleep(pid));
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  std::thread reader([&] {
    for (int i = 0;; ++i) {
      absl::StatusOr<std::string> m = b.RecvBytes(std::nullopt, absl::Seconds(30));
      ASSERT_TRUE(m.ok()) << m.status();
      if (*m == "after the takeover") {
        EXPECT_GT(i, 10);
        return;
      }
      ASSERT_EQ(*m, message(i));
    }
  });
  MPROC_EXPECT_OK(a.SendBytes("after the takeover", absl::Seconds(30)));
  reader.join();
}

// A sender killed halfway through a long message on the socket leaves the mark of its socket
// write; the next sender to take the turn tears the direction instead of splicing its own
// message into the cut-off one. The receiver sees end of file where the message breaks off,
// never the next sender's bytes as the rest of it.
TEST(PipeRingTest, SenderKilledPartwayThroughALongMessageTearsTheDirection) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  MPROC_ASSERT_OK(a.SendBytes("before"));
  pid_t pid = Child([&] {
    b.Close();
    (void)a.SendBytes(std::string(64 << 20, 'k'));  // blocks: nobody reads
    return 0;
  });
  // The child sits inside the long message: its only sleep is the socket write that nobody
  // reads.
  ASSERT_TRUE(testing::WaitUntilAsleep(pid));
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  EXPECT_THAT(a.SendBytes("after", absl::Seconds(10)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cut off partway")));
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(10)), IsOkAndHolds(std::string("before")));
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(10)).status(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("end of file after")));
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(10)).status(),
              StatusIs(absl::StatusCode::kOutOfRange));
  // The other direction is untouched.
  MPROC_EXPECT_OK(b.SendBytes("reverse"));
  EXPECT_THAT(a.RecvBytes(std::nullopt, absl::Seconds(10)), IsOkAndHolds(std::string("reverse")));
}

// A receiver killed halfway through reading a long message leaves the stream mid-message; the
// next receiver to take the turn tears the direction: it and every later Send or Recv that
// way fail with FAILED_PRECONDITION, and a sender blocked writing sees the receiver gone.
TEST(PipeRingTest, ReceiverKilledPartwayThroughALongMessageTearsTheDirection) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  pid_t pid = Child([&] {
    a.Close();
    (void)b.RecvBytes();
    return 0;
  });
  absl::Status sent = absl::UnknownError("not run");
  std::thread sender([&] { sent = a.SendBytes(std::string(256 << 20, 'r')); });
  // Stop the child once it has read a few MiB of the message (its read count in /proc).
  auto bytes_read = [&] {
    std::ifstream io("/proc/" + std::to_string(pid) + "/io");
    std::string key;
    uint64_t value = 0;
    while (io >> key >> value) {
      if (key == "rchar:") return value;
    }
    return uint64_t{0};
  };
  for (int i = 0; i < 10000 && bytes_read() < (4u << 20); ++i) ::usleep(100);
  ::kill(pid, SIGSTOP);  // the child sits inside the message
  ASSERT_GE(bytes_read(), 4u << 20);
  ASSERT_LT(bytes_read(), 256u << 20);
  ::kill(pid, SIGKILL);
  EXPECT_EQ(Join(pid), 128 + SIGKILL);
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(10)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cut off partway")));
  sender.join();
  EXPECT_THAT(sent, StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(a.SendBytes("after"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// A long message goes over the socket; a max_length it exceeds is an error there too.
TEST(PipeRingTest, LongMessagesAreBoundedByMaxLength) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  std::thread writer([&] { EXPECT_TRUE(a.SendBytes(std::string(1 << 20, 'L')).ok()); });
  ASSERT_OK_AND_ASSIGN(std::string m, b.RecvBytes(std::nullopt, absl::Seconds(30)));
  EXPECT_EQ(m, std::string(1 << 20, 'L'));
  writer.join();
  MPROC_ASSERT_OK(a.SendBytes(std::string(100'000, 'x')));
  EXPECT_THAT(b.RecvBytes(50'000, absl::Seconds(30)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("bad message length")));
  EXPECT_FALSE(b.readable());
}

TEST(PipeRingTest, ConnectionsPassedOverAConnectionKeepTheirRing) {
  ASSERT_OK_AND_ASSIGN(auto outer, Pipe());
  ASSERT_OK_AND_ASSIGN(auto inner, Pipe());
  pid_t pid = Child([&] {
    outer.first.Close();
    inner.first.Close();
    inner.second.Close();
    absl::StatusOr<Connection> c = outer.second.Recv<Connection>(absl::Seconds(30));
    if (!c.ok()) return 1;
    for (int i = 0; i < 500; ++i) {
      absl::StatusOr<std::string> m = c->RecvBytes(std::nullopt, absl::Seconds(30));
      if (!m.ok() || *m != Message(5, i)) return 2;
      if (!c->SendBytes(*m + "!").ok()) return 3;
    }
    return 0;
  });
  outer.second.Close();
  MPROC_ASSERT_OK(outer.first.Send(inner.second));
  inner.second.Close();
  for (int i = 0; i < 500; ++i) {
    MPROC_ASSERT_OK(inner.first.SendBytes(Message(5, i)));
    ASSERT_OK_AND_ASSIGN(std::string back, inner.first.RecvBytes(std::nullopt, absl::Seconds(30)));
    ASSERT_EQ(back, Message(5, i) + "!");
  }
  EXPECT_EQ(Join(pid), 0);
}

// The ring is shared with the peer, trusted no more than a socket peer: records that overrun
// what was published, or of unknown kinds, are errors that leave the reader intact.
TEST(PipeRingTest, CorruptRecordsAreErrorsNotCrashes) {
  struct Case {
    uint32_t len, kind;
    uint64_t published;
  };
  for (const Case& c : {Case{1u << 30, 1, 8}, Case{0, 99, 8}, Case{5, 3, 16}, Case{0, 1, 1u << 30}}) {
    ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
    auto& [a, b] = pair;
    EncodeBuffer buf;
    Encode(a, buf);
    ASSERT_EQ(buf.fds().size(), 2u);
    ASSERT_OK_AND_ASSIGN(Segment seg, Segment::FromFd(UniqueFd(::dup(buf.fds()[1]))));
    ASSERT_OK_AND_ASSIGN(Mapping m, seg.Map());
    auto* dir0 = reinterpret_cast<ipc_internal::LinkDirection*>(
        static_cast<std::byte*>(m.data()) + 64);
    const uint32_t header[2] = {c.len, c.kind};
    std::memcpy(static_cast<std::byte*>(m.data()) + 4096, header, sizeof(header));
    dir0->tail.store(c.published);
    EXPECT_THAT(b.RecvBytes(std::nullopt, absl::Seconds(1)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("corrupt")))
        << c.len << " " << c.kind << " " << c.published;
    EXPECT_FALSE(b.readable());
  }
}

// The peer can write the receiver's head as well as its tail: a record whose header wraps
// around the ring's end (an unaligned head near it) is read around the wrap, never past the
// ring. Direction 1's ring is the last thing in the segment, so reading past it would leave
// the mapping.
TEST(PipeRingTest, AHeaderAcrossTheRingsEndIsReadAroundTheWrap) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  auto& [a, b] = pair;
  EncodeBuffer buf;
  Encode(b, buf);
  ASSERT_EQ(buf.fds().size(), 2u);
  ASSERT_OK_AND_ASSIGN(Segment seg, Segment::FromFd(UniqueFd(::dup(buf.fds()[1]))));
  ASSERT_OK_AND_ASSIGN(Mapping m, seg.Map());
  auto* base = static_cast<std::byte*>(m.data());
  auto* dir1 = reinterpret_cast<ipc_internal::LinkDirection*>(base + 64 + sizeof(ipc_internal::LinkDirection));
  std::byte* ring1 = base + 4096 + ipc_internal::kLinkRingBytes;
  ASSERT_EQ(static_cast<uint64_t>(ring1 + ipc_internal::kLinkRingBytes - base), seg.size());
  const uint64_t head = 3 * ipc_internal::kLinkRingBytes - 4;
  const uint32_t len = 5, kind = static_cast<uint32_t>(ipc_internal::LinkRecord::kData);
  std::memcpy(ring1 + ipc_internal::kLinkRingBytes - 4, &len, 4);
  std::memcpy(ring1, &kind, 4);
  std::memcpy(ring1 + 4, "hello", 5);
  dir1->head.store(head);
  dir1->tail.store(head + 16);
  EXPECT_THAT(a.RecvBytes(std::nullopt, absl::Seconds(1)), IsOkAndHolds(std::string("hello")));
  EXPECT_EQ(dir1->head.load(), head + 16);
}

// A long message streamed through the ring in pieces (a pool channel's) that cannot be sent
// whole (its receiver stopped reading past the deadline) tears the direction after its first
// piece: the receiver gets the pieces, then end of file, never the next message joined to them.
TEST(PipeRingTest, AMessageCutOffPartwayThroughItsPiecesTearsTheDirection) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd s0(sv[0]), s1(sv[1]);
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<ipc_internal::RingLink> link, ipc_internal::RingLink::Create());
  const std::string big(3 * ipc_internal::kLinkRingBytes, 'x');
  EXPECT_THAT(link->AppendMessage(0, s0.get(), {}, std::as_bytes(std::span(big)),
                                  Deadline::After(absl::Milliseconds(50))),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(link->Torn(0));
  EXPECT_FALSE(link->Torn(1));
  ASSERT_OK_AND_ASSIGN(ipc_internal::RingLink::Next next,
                       link->Peek(1, s1.get(), Deadline::After(absl::Seconds(5))));
  EXPECT_EQ(next.kind, ipc_internal::LinkRecord::kPart);
  std::string got;
  EXPECT_THAT(link->TakeMessage(1, s1.get(), next, Deadline::After(absl::Seconds(20)), &got),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_LT(got.size(), big.size());
  EXPECT_GT(got.size(), 0u);
}

}  // namespace
}  // namespace mproc
