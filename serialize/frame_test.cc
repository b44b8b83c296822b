#include "serialize/frame.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

#include "base/fork_child.h"
#include "base/status_matchers.h"
#include "base/syscall.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

struct Channel {
  UniqueFd r, w;
};

enum class Transport { kPipe, kStream, kSeqpacket };

Channel Make(Transport t) {
  int fds[2];
  if (t == Transport::kPipe) {
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
  }
  int type = t == Transport::kStream ? SOCK_STREAM : SOCK_SEQPACKET;
  EXPECT_EQ(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

class FrameTest : public ::testing::TestWithParam<Transport> {};

TEST_P(FrameTest, ValuesRoundTripInOrder) {
  Channel c = Make(GetParam());
  std::thread writer([&] {
    EncodeBuffer buf;
    for (int i = 0; i < 100; ++i) {
      std::vector<int> v(static_cast<size_t>(i), i);
      ASSERT_THAT(WriteValue(c.w.get(), static_cast<uint8_t>(i), v, Deadline::Infinite(), &buf), IsOk());
    }
  });
  for (int i = 0; i < 100; ++i) {
    uint8_t kind = 0;
    ASSERT_OK_AND_ASSIGN(std::vector<int> v, ReadValue<std::vector<int>>(c.r.get(), Deadline::Infinite(), &kind));
    EXPECT_EQ(kind, i);
    EXPECT_EQ(v, std::vector<int>(static_cast<size_t>(i), i));
  }
  writer.join();
}

TEST_P(FrameTest, EmptyAndLargePayloads) {
  Channel c = Make(GetParam());
  // SEQPACKET records are bounded by the socket buffer; streams take anything.
  size_t big = GetParam() == Transport::kSeqpacket ? (64 << 10) : (24 << 20);
  std::string payload(big, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 13);
  std::thread writer([&] {
    ASSERT_THAT(WriteFrame(c.w.get(), 1, {}, {}, Deadline::Infinite()), IsOk());
    ASSERT_THAT(WriteFrame(c.w.get(), 2, AsBytes(payload), {}, Deadline::Infinite()), IsOk());
  });
  Frame f;
  MPROC_ASSERT_OK(ReadFrameInto(c.r.get(), f, Deadline::Infinite()));
  EXPECT_EQ(f.kind, 1);
  EXPECT_EQ(f.payload().size(), 0u);
  MPROC_ASSERT_OK(ReadFrameInto(c.r.get(), f, Deadline::Infinite()));
  EXPECT_EQ(f.kind, 2);
  ASSERT_EQ(f.payload().size(), payload.size());
  EXPECT_EQ(std::memcmp(f.payload().data(), payload.data(), payload.size()), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.payload().data()) % 16, 0u);
  writer.join();
}

// A payload written in parts arrives as one frame, the parts back to back; a big part is
// written across several partial writes (with a deadline, as the pool writes).
TEST_P(FrameTest, PartsArriveAsOnePayload) {
  Channel c = Make(GetParam());
  const size_t big = GetParam() == Transport::kSeqpacket ? (16 << 10) : (3 << 20);
  std::string a = "head:", b(big, '\0'), d = ":tail";
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<char>(i * 7 + 1);
  auto bytes = [](const std::string& x) { return std::as_bytes(std::span(x.data(), x.size())); };
  std::thread writer([&] {
    const std::span<const std::byte> parts[4] = {bytes(a), {}, bytes(b), bytes(d)};
    ASSERT_THAT(WriteFrameParts(c.w.get(), 9, parts, {}, Deadline::After(absl::Seconds(30))),
                IsOk());
  });
  ASSERT_OK_AND_ASSIGN(Frame f, ReadFrame(c.r.get(), Deadline::After(absl::Seconds(30))));
  writer.join();
  EXPECT_EQ(f.kind, 9);
  const std::string got(reinterpret_cast<const char*>(f.payload().data()), f.payload().size());
  EXPECT_TRUE(got == a + b + d);
  const std::span<const std::byte> five[5] = {};
  EXPECT_THAT(WriteFrameParts(c.w.get(), 1, five, {}, Deadline::Infinite()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(FrameTest, PeerClosedIsOutOfRange) {
  Channel c = Make(GetParam());
  c.w.Reset();
  EXPECT_THAT(ReadFrame(c.r.get(), Deadline::Infinite()),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("peer closed")));
}

TEST_P(FrameTest, WriteToGoneReaderIsOutOfRange) {
  Channel c = Make(GetParam());
  c.r.Reset();
  EXPECT_THAT(WriteFrame(c.w.get(), 1, AsBytes("x"), {}, Deadline::Infinite()),
              StatusIs(absl::StatusCode::kOutOfRange));
}

// A frame bigger than the pipe or socket buffer, to a reader that never reads, ends at the
// write's deadline: no send or writev may block past it.
TEST_P(FrameTest, WriteHonoursItsDeadline) {
  if (GetParam() == Transport::kSeqpacket) GTEST_SKIP() << "one record: EMSGSIZE, not a wait";
  Channel c = Make(GetParam());
  const std::string big(8 << 20, 'f');
  const int64_t t0 = MonotonicNowNs();
  EXPECT_THAT(WriteFrame(c.w.get(), 1, AsBytes(big), {}, Deadline::After(absl::Milliseconds(50))),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(MonotonicNowNs() - t0, 5'000'000'000) << "blocked past its deadline";
}

TEST_P(FrameTest, ReadTimesOut) {
  Channel c = Make(GetParam());
  int64_t t0 = MonotonicNowNs();
  EXPECT_THAT(ReadFrame(c.r.get(), Deadline::After(absl::Milliseconds(60))),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(MonotonicNowNs() - t0, 60'000'000);
}

INSTANTIATE_TEST_SUITE_P(Transports, FrameTest,
                         ::testing::Values(Transport::kPipe, Transport::kStream, Transport::kSeqpacket));

class FdFrameTest : public ::testing::TestWithParam<Transport> {};

TEST_P(FdFrameTest, FdsTravelOverUnixSockets) {
  Channel c = Make(GetParam());
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd pr(p[0]), pw(p[1]);
  std::vector<UniqueFd> many;
  for (int i = 0; i < 200; ++i) many.emplace_back(::fcntl(pw.get(), F_DUPFD_CLOEXEC, 0));
  std::pair<std::string, std::vector<UniqueFd>> v{"fds", std::move(many)};
  EncodeBuffer buf;
  Encode(v, buf);
  ASSERT_EQ(buf.fds().size(), 200u);
  MPROC_ASSERT_OK(WriteFrame(c.w.get(), 9, buf, Deadline::Infinite()));
  v.second.clear();  // the sender may close its copies once the frame is written
  ASSERT_OK_AND_ASSIGN(Frame f, ReadFrame(c.r.get(), Deadline::Infinite()));
  ASSERT_EQ(f.fds.size(), 200u);
  for (const UniqueFd& fd : f.fds) EXPECT_TRUE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  using V = std::pair<std::string, std::vector<UniqueFd>>;
  ASSERT_OK_AND_ASSIGN(V got, Decode<V>(f.payload(), std::move(f.fds)));
  ASSERT_EQ(got.second.size(), 200u);
  ASSERT_EQ(::write(got.second[123].get(), "k", 1), 1);
  char ch;
  ASSERT_EQ(::read(pr.get(), &ch, 1), 1);
  EXPECT_EQ(ch, 'k');
}

INSTANTIATE_TEST_SUITE_P(UnixSockets, FdFrameTest,
                         ::testing::Values(Transport::kStream, Transport::kSeqpacket));

TEST(FrameFdTest, FdsOverAPipeAreRefused) {
  Channel c = Make(Transport::kPipe);
  int fds[] = {0};
  EXPECT_THAT(WriteFrame(c.w.get(), 1, AsBytes("x"), fds, Deadline::Infinite()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("AF_UNIX")));
  // WritePipeValue<UniqueFd> would not compile: kTypeCarriesFds<UniqueFd> is true.
  static_assert(kTypeCarriesFds<UniqueFd>);
}

TEST(FrameFdTest, TooManyFdsAreRefused) {
  Channel c = Make(Transport::kStream);
  std::vector<int> fds(254, 0);
  EXPECT_THAT(WriteFrame(c.w.get(), 1, {}, fds, Deadline::Infinite()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("253")));
}

TEST(FrameFdTest, FdCountMismatchIsAnErrorAndClosesWhatArrived) {
  Channel c = Make(Transport::kStream);
  // A header announcing 2 fds, sent with one.
  std::byte header[kFrameHeaderSize];
  EncodeFrameHeader({1, 2, 0}, header);
  int one = ::dup(0);
  iovec iov = {header, kFrameHeaderSize};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    cmsghdr align;
  } ctl;
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.buf;
  msg.msg_controllen = sizeof(ctl.buf);
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &one, sizeof(int));
  ASSERT_EQ(::sendmsg(c.w.get(), &msg, 0), static_cast<ssize_t>(kFrameHeaderSize));
  ::close(one);
  EXPECT_THAT(ReadFrame(c.r.get(), Deadline::Infinite()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("announces 2 fds; 1 arrived")));
  // (The leak-checking test main fails this test if the received fd stayed open.)
}

TEST(FrameFdTest, CtruncWhenTheReceiverIsOutOfDescriptorsIsAnError) {
  Channel c = Make(Transport::kStream);
  std::vector<int> fds(3, 0);
  MPROC_ASSERT_OK(WriteFrame(c.w.get(), 1, AsBytes("x"), fds, Deadline::Infinite()));
  const pid_t pid = ForkChild([&] {
    // Leave room for no new descriptor: the kernel truncates the SCM_RIGHTS array.
    int highest = 0;
    for (int fd = 0; fd < 1024; ++fd) {
      if (::fcntl(fd, F_GETFD) != -1) highest = fd;
    }
    rlimit rl = {static_cast<rlim_t>(highest + 1), static_cast<rlim_t>(highest + 1)};
    ::setrlimit(RLIMIT_NOFILE, &rl);
    absl::StatusOr<Frame> f = ReadFrame(c.r.get(), Deadline::Infinite(), {}, FdKind::kStreamSocket);
    const bool ok = !f.ok() && f.status().code() == absl::StatusCode::kInvalidArgument &&
                    f.status().message().find("MSG_CTRUNC") != absl::string_view::npos;
    return ok ? 0 : 1;
  });
  ASSERT_GT(pid, 0);
  EXPECT_EQ(ReapChild(pid), 0);
}

// ---------------------------------------------------------------- malformed frames in memory

std::string ValidFrame(const std::string& payload, uint8_t kind = 7) {
  std::byte h[kFrameHeaderSize];
  EncodeFrameHeader({kind, 0, payload.size()}, h);
  return std::string(reinterpret_cast<const char*>(h), kFrameHeaderSize) + payload;
}

TEST(FrameParseTest, ValidFrameParses) {
  ASSERT_OK_AND_ASSIGN(Frame f, ParseFrame(AsBytes(ValidFrame("hello"))));
  EXPECT_EQ(f.kind, 7);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.payload().data()), f.payload().size()), "hello");
}

TEST(FrameParseTest, TruncatedAtEveryOffset) {
  std::string full = ValidFrame("some payload bytes");
  for (size_t cut = 0; cut < full.size(); ++cut) {
    EXPECT_THAT(ParseFrame(AsBytes(full.substr(0, cut))), StatusIs(absl::StatusCode::kInvalidArgument))
        << cut;
  }
}

TEST(FrameParseTest, BadMagicVersionFdsAndLengths) {
  std::string f = ValidFrame("abc");
  std::string bad_magic = f;
  bad_magic[0] = 'X';
  EXPECT_THAT(ParseFrame(AsBytes(bad_magic)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("magic")));
  std::string bad_version = f;
  bad_version[4] = 9;
  EXPECT_THAT(ParseFrame(AsBytes(bad_version)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version")));
  std::string many_fds = f;
  many_fds[6] = static_cast<char>(0xff);
  EXPECT_THAT(ParseFrame(AsBytes(many_fds)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fds")));
  std::string past_end = f;
  past_end[8] = 100;  // claims 100 bytes, 3 present
  EXPECT_THAT(ParseFrame(AsBytes(past_end)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("claims 100")));
  std::string huge = f;
  std::memset(huge.data() + 8, 0xff, 8);
  EXPECT_THAT(ParseFrame(AsBytes(huge)), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("exceeds")));
}

TEST(FrameStreamTest, ALyingLengthCostsOnlyWhatArrived) {
  // A header claiming 200 MiB followed by 10 bytes and a hang-up: OUT_OF_RANGE, and the reader
  // never allocated the claimed size.
  Channel c = Make(Transport::kPipe);
  std::byte h[kFrameHeaderSize];
  EncodeFrameHeader({1, 0, uint64_t{200} << 20}, h);
  ASSERT_EQ(::write(c.w.get(), h, kFrameHeaderSize), static_cast<ssize_t>(kFrameHeaderSize));
  ASSERT_EQ(::write(c.w.get(), "0123456789", 10), 10);
  c.w.Reset();
  Frame f;
  EXPECT_THAT(ReadFrameInto(c.r.get(), f, Deadline::Infinite()),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("middle of a frame payload")));
  EXPECT_LE(f.capacity, size_t{64} << 10);
}

TEST(FrameStreamTest, OverLimitHeaderIsRefusedBeforeReadingThePayload) {
  Channel c = Make(Transport::kStream);
  std::byte h[kFrameHeaderSize];
  EncodeFrameHeader({1, 0, 5000}, h);
  ASSERT_EQ(::write(c.w.get(), h, kFrameHeaderSize), static_cast<ssize_t>(kFrameHeaderSize));
  FrameLimits small{4096};
  EXPECT_THAT(ReadFrame(c.r.get(), Deadline::Infinite(), small),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit of 4096")));
  std::string payload(5000, 'p');
  EXPECT_THAT(WriteFrame(c.w.get(), 1, AsBytes(payload), {}, Deadline::Infinite(), small),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FrameStreamTest, GarbageBytesAreABadMagic) {
  Channel c = Make(Transport::kStream);
  std::string junk(64, 'J');
  ASSERT_EQ(::write(c.w.get(), junk.data(), junk.size()), 64);
  EXPECT_THAT(ReadFrame(c.r.get(), Deadline::Infinite()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("magic")));
}

TEST(FrameStreamTest, SeqpacketRuntAndMismatchedRecordsAreDropped) {
  Channel c = Make(Transport::kSeqpacket);
  ASSERT_EQ(::send(c.w.get(), "tiny", 4, 0), 4);
  std::string lying = ValidFrame("abcdef");
  lying[8] = 2;  // claims 2 bytes, record holds 6
  ASSERT_EQ(::send(c.w.get(), lying.data(), lying.size(), 0), static_cast<ssize_t>(lying.size()));
  MPROC_ASSERT_OK(WriteFrame(c.w.get(), 3, AsBytes("good"), {}, Deadline::Infinite()));
  EXPECT_THAT(ReadFrame(c.r.get(), Deadline::Infinite()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shorter than a header")));
  EXPECT_THAT(ReadFrame(c.r.get(), Deadline::Infinite()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("claims 2")));
  // The channel stays usable: the next record is read intact.
  ASSERT_OK_AND_ASSIGN(Frame f, ReadFrame(c.r.get(), Deadline::Infinite()));
  EXPECT_EQ(f.kind, 3);
}

}  // namespace
}  // namespace mproc
