#include "shm/shared_bytes.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "serialize/codec.h"
#include "serialize/frame.h"
#include "shm/segment.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

class SharedBytesTest : public ::testing::Test {
 protected:
  // The pool keeps descriptors of idle buffers: free them so the leak check sees none; and
  // put back limits a failed test may have left changed.
  void TearDown() override {
    SharedBytes::SetPoolLimit(SharedBytes::kDefaultLimit);
    SharedBytes::SetCacheLimit(SharedBytes::kDefaultLimit);
    SharedBytes::ReleaseIdle();
  }
};

// What a carrier does: encode, duplicate the descriptors (as SCM_RIGHTS does), decode.
absl::StatusOr<SharedBytes> RoundTrip(const SharedBytes& s) {
  EncodeBuffer b;
  Encode(s, b);
  std::vector<UniqueFd> fds;
  for (int fd : b.fds()) fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  return Decode<SharedBytes>(b.bytes(), std::move(fds));
}

absl::StatusOr<SharedBytes> Filled(size_t n, char c) {
  absl::StatusOr<SharedBytesWriter> w = SharedBytesWriter::Allocate(n);
  if (!w.ok()) return w.status();
  std::memset(w->data(), c, n);
  return std::move(*w).Freeze();
}

TEST_F(SharedBytesTest, WriteInPlaceFreezeAndView) {
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(4000));
  ASSERT_EQ(w.size(), 4000u);
  ASSERT_OK_AND_ASSIGN(std::span<uint32_t> words, w.As<uint32_t>());
  ASSERT_EQ(words.size(), 1000u);
  for (uint32_t i = 0; i < 1000; ++i) words[i] = i * 7;
  ASSERT_OK_AND_ASSIGN(SharedBytes b, std::move(w).Freeze());
  EXPECT_EQ(w.size(), 0u);  // the writer is spent
  EXPECT_EQ(w.data(), nullptr);
  EXPECT_THAT(std::move(w).Freeze(), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_EQ(b.size(), 4000u);
  ASSERT_OK_AND_ASSIGN(std::span<const uint32_t> v, b.As<uint32_t>());
  ASSERT_EQ(v.size(), 1000u);
  for (uint32_t i = 0; i < 1000; ++i) ASSERT_EQ(v[i], i * 7);
  EXPECT_THAT((b.As<std::array<uint8_t, 3>>()), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("whole number")));
}

TEST_F(SharedBytesTest, ReceivedCopyHasTheBytesAndNobodyCanWriteIt) {
  ASSERT_OK_AND_ASSIGN(SharedBytes sent, SharedBytes::CopyOf(std::string_view("frame 1 of 1")));
  ASSERT_OK_AND_ASSIGN(SharedBytes got, RoundTrip(sent));
  EXPECT_EQ(got.view(), "frame 1 of 1");
  EXPECT_NE(got.data(), sent.data());  // its own read-only mapping
  const int fd = got.descriptor();
  ASSERT_GE(fd, 0);
  // Not through the travelling descriptor, not through a writable mapping, not by reopening.
  EXPECT_EQ(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), MAP_FAILED);
  EXPECT_EQ(::write(fd, "x", 1), -1);
  UniqueFd rw(::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(rw.ok());
  EXPECT_EQ(::write(rw.get(), "x", 1), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rw.get(), 0), MAP_FAILED);
  EXPECT_EQ(::ftruncate(rw.get(), 0), -1);
  EXPECT_EQ(got.view(), "frame 1 of 1");
}

TEST_F(SharedBytesTest, EmptyAndZeroLengthBuffersTravel) {
  ASSERT_OK_AND_ASSIGN(SharedBytes empty, RoundTrip(SharedBytes()));
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.descriptor(), -1);
  ASSERT_OK_AND_ASSIGN(SharedBytes zero, SharedBytes::CopyOf(std::string_view()));
  ASSERT_OK_AND_ASSIGN(SharedBytes got, RoundTrip(zero));
  EXPECT_EQ(got.size(), 0u);
  EXPECT_GE(got.descriptor(), 0);
}

TEST_F(SharedBytesTest, AReceivedBufferCanBeSentOn) {
  ASSERT_OK_AND_ASSIGN(SharedBytes a, Filled(100000, 'q'));
  ASSERT_OK_AND_ASSIGN(SharedBytes b, RoundTrip(a));
  ASSERT_OK_AND_ASSIGN(SharedBytes c, RoundTrip(b));
  ASSERT_EQ(c.size(), 100000u);
  EXPECT_EQ(c.view(), std::string(100000, 'q'));
}

TEST_F(SharedBytesTest, ABufferIsReusedOnlyOnceNoHolderRemains) {
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(65536));
  const std::byte* first = w.data();
  ASSERT_OK_AND_ASSIGN(SharedBytes sent, std::move(w).Freeze());
  ASSERT_OK_AND_ASSIGN(SharedBytes held, RoundTrip(sent));
  sent = SharedBytes();  // the sender is done; the receiver still holds it
  EXPECT_EQ(SharedBytes::PoolBytes(), 65536u);
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter w2, SharedBytesWriter::Allocate(65536));
  EXPECT_NE(w2.data(), first);  // not handed out again under the receiver
  const std::byte* second = w2.data();
  w2 = SharedBytesWriter();  // never frozen: idle at once
  held = SharedBytes();      // the last holder lets go
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter x, SharedBytesWriter::Allocate(60000));
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter y, SharedBytesWriter::Allocate(65536));
  EXPECT_THAT((std::vector<const std::byte*>{x.data(), y.data()}),
              ::testing::UnorderedElementsAre(first, second));
  EXPECT_EQ(SharedBytes::PoolBytes(), 0u);
}

TEST_F(SharedBytesTest, PoolLimitBoundsIdleMemory) {
  SharedBytes::SetPoolLimit(128 << 10);
  {
    std::vector<SharedBytes> v;
    for (int i = 0; i < 4; ++i) {
      ASSERT_OK_AND_ASSIGN(SharedBytes b, Filled(65536, 'a'));
      v.push_back(std::move(b));
    }
  }
  EXPECT_EQ(SharedBytes::PoolBytes(), 128u << 10);
  SharedBytes::SetPoolLimit(0);
  EXPECT_EQ(SharedBytes::PoolBytes(), 0u);
  SharedBytes::SetPoolLimit(SharedBytes::kDefaultLimit);
}

TEST_F(SharedBytesTest, LimitsCountThePagesWrittenNotTheCapacity) {
  {
    ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(size_t{64} << 20));
    w.data()[0] = std::byte{1};  // one page (one huge page where shmem uses them)
  }
  EXPECT_GE(SharedBytes::PoolBytes(), 4096u);
  EXPECT_LE(SharedBytes::PoolBytes(), size_t{2} << 20);
  {
    ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(size_t{64} << 20));
    std::memset(w.data(), 2, size_t{8} << 20);
  }
  EXPECT_GE(SharedBytes::PoolBytes(), size_t{8} << 20);
  EXPECT_LE(SharedBytes::PoolBytes(), size_t{10} << 20);
  // A buffer holding more than the limit is freed, not kept.
  SharedBytes::SetPoolLimit(size_t{4} << 20);
  EXPECT_EQ(SharedBytes::PoolBytes(), 0u);
  {
    ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(size_t{64} << 20));
    std::memset(w.data(), 3, size_t{6} << 20);
  }
  EXPECT_EQ(SharedBytes::PoolBytes(), 0u);
  SharedBytes::SetPoolLimit(SharedBytes::kDefaultLimit);
}

TEST_F(SharedBytesTest, ReceivedMappingsAreCachedAndReused) {
  ASSERT_OK_AND_ASSIGN(SharedBytes a, Filled(1 << 20, 'c'));
  const std::byte* mapped;
  {
    ASSERT_OK_AND_ASSIGN(SharedBytes got, RoundTrip(a));
    mapped = got.data();
  }
  EXPECT_EQ(SharedBytes::CacheBytes(), 1u << 20);  // kept, not in use
  ASSERT_OK_AND_ASSIGN(SharedBytes again, RoundTrip(a));
  EXPECT_EQ(again.data(), mapped);  // no new mapping, no new page faults
  again = SharedBytes();
  SharedBytes::ReleaseIdle();
  EXPECT_EQ(SharedBytes::CacheBytes(), 0u);
}

TEST_F(SharedBytesTest, HostileDescriptorsAndLengthsAreRefused) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd keep_w(p[1]);
  EXPECT_THAT(SharedBytes::FromDescriptor(UniqueFd(p[0]), 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a memfd")));
  // A memfd with no write seal: its sender could change it under the receiver.
  ASSERT_OK_AND_ASSIGN(Segment seg, Segment::Create(8192));
  ASSERT_OK_AND_ASSIGN(Segment dup, seg.Duplicate());
  EXPECT_THAT(SharedBytes::FromDescriptor(UniqueFd(::fcntl(dup.fd(), F_DUPFD_CLOEXEC, 0)), 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not sealed")));
  EXPECT_THAT(SharedBytes::FromDescriptor(UniqueFd(), 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A genuine buffer with a length past its memory, decoded from a frame.
  ASSERT_OK_AND_ASSIGN(SharedBytes b, Filled(10, 'z'));
  EncodeBuffer buf;
  const uint8_t tag = 1;
  buf.Append(&tag, 1);
  buf.PutVarint(buf.AttachFd(b.descriptor()));
  buf.PutVarint(uint64_t{1} << 20);  // the memfd holds 4096
  std::vector<UniqueFd> fds;
  fds.emplace_back(::fcntl(b.descriptor(), F_DUPFD_CLOEXEC, 0));
  EXPECT_THAT(Decode<SharedBytes>(buf.bytes(), std::move(fds)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a length of 1048576")));
  // A tag that is neither empty nor a buffer.
  const std::byte bad[] = {std::byte{7}};
  EXPECT_THAT(Decode<SharedBytes>(bad, {}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SharedBytesTest, AnotherProcessReadsItAndAKilledHolderReleasesIt) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd parent_end(sv[0]), child_end(sv[1]);
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(3 << 20));
  const std::byte* first = w.data();
  for (size_t i = 0; i < w.size(); ++i) w.data()[i] = static_cast<std::byte>(i * 31 + 7);
  ASSERT_OK_AND_ASSIGN(SharedBytes sent, std::move(w).Freeze());
  pid_t pid = testing::Child([&] {
    sent = SharedBytes();  // hold it only as received, not as inherited
    parent_end = UniqueFd();
    absl::StatusOr<Frame> f = ReadFrame(child_end.get(), Deadline::After(absl::Seconds(30)));
    if (!f.ok()) return 2;
    absl::StatusOr<SharedBytes> got = Decode<SharedBytes>(f->payload(), std::move(f->fds));
    if (!got.ok() || got->size() != (3u << 20)) return 3;
    for (size_t i = 0; i < got->size(); ++i) {
      if (got->data()[i] != static_cast<std::byte>(i * 31 + 7)) return 4;
    }
    if (::write(child_end.get(), "k", 1) != 1) return 5;  // checked, and still holding it
    ::pause();
    return 6;
  });
  child_end = UniqueFd();
  EncodeBuffer b;
  Encode(sent, b);
  MPROC_ASSERT_OK(WriteFrame(parent_end.get(), 1, b, Deadline::After(absl::Seconds(30))));
  sent = SharedBytes();  // in flight, then held by the child
  char c = 0;
  ASSERT_TRUE(testing::WaitReadable(parent_end.get(), 30));
  ASSERT_EQ(::read(parent_end.get(), &c, 1), 1);
  {
    ASSERT_OK_AND_ASSIGN(SharedBytesWriter w2, SharedBytesWriter::Allocate(3 << 20));
    EXPECT_NE(w2.data(), first);  // the child holds it
  }
  ::kill(pid, SIGKILL);
  EXPECT_EQ(testing::Join(pid), 128 + SIGKILL);
  // Its descriptors closed with it: the buffer is free again (the newest idle one is the
  // fresh buffer just dropped; ask for both).
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter x, SharedBytesWriter::Allocate(3 << 20));
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter y, SharedBytesWriter::Allocate(3 << 20));
  EXPECT_TRUE(x.data() == first || y.data() == first);
}

TEST_F(SharedBytesTest, AForkChildNeverReusesItsParentsIdleBuffers) {
  {
    ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(8192));
    std::memcpy(w.data(), "parent", 7);
  }  // idle in the parent's pool
  ASSERT_EQ(SharedBytes::PoolBytes(), 8192u);
  pid_t pid = testing::Child([] {
    if (SharedBytes::PoolBytes() != 0) return 2;
    absl::StatusOr<SharedBytesWriter> w = SharedBytesWriter::Allocate(8192);
    if (!w.ok()) return 3;
    std::memcpy(w->data(), "child!", 7);
    return 0;
  });
  EXPECT_EQ(testing::Join(pid), 0);
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(8192));
  EXPECT_STREQ(reinterpret_cast<const char*>(w.data()), "parent");
}

TEST_F(SharedBytesTest, MovedFromBuffersAndWritersAreEmpty) {
  ASSERT_OK_AND_ASSIGN(SharedBytes a, Filled(100, 'm'));
  SharedBytes b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): what moving leaves is specified
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.descriptor(), -1);
  EXPECT_EQ(b.view(), std::string(100, 'm'));
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(10));
  SharedBytesWriter v = std::move(w);
  EXPECT_EQ(w.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(v.size(), 10u);
}

TEST_F(SharedBytesTest, ReleaseIdleFreesEvenBuffersNothingWasWrittenTo) {
  { ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(size_t{32} << 20)); }
  ASSERT_OK_AND_ASSIGN(SharedBytes z, SharedBytes::CopyOf(std::string_view()));
  { ASSERT_OK_AND_ASSIGN(SharedBytes got, RoundTrip(z)); }
  EXPECT_GT(SharedBytes::PoolBytes(), 0u);
  EXPECT_GT(SharedBytes::CacheBytes(), 0u);
  SharedBytes::ReleaseIdle();
  EXPECT_EQ(SharedBytes::PoolBytes(), 0u);
  EXPECT_EQ(SharedBytes::CacheBytes(), 0u);
}

TEST_F(SharedBytesTest, OversizedRequestIsRefused) {
  EXPECT_THAT(SharedBytesWriter::Allocate((size_t{1} << 40) + 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2^40")));
}

}  // namespace
}  // namespace mproc
