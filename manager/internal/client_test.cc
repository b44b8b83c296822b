// ReplyReader: replies taken whole from a stream, whatever pieces they arrive in.
#include "manager/internal/client.h"

#include <unistd.h>

#include <string>
#include <thread>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "base/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "serialize/cpython_framing.h"

namespace mproc::manager_internal {
namespace {

using ::testing::HasSubstr;

using testing::StreamSocketPair;

void Put(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    ASSERT_GT(n, 0);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}
std::string Framed(std::string_view body) { return CPythonLengthHeader(body.size()) + std::string(body); }

TEST(ReplyReaderTest, RepliesComeWholeFromOneWriteOrFromPieces) {
  auto p = StreamSocketPair();
  ReplyReader r;
  // Two replies in one write: the second waits in the reader for the next call.
  Put(p.b.get(), Framed("first") + Framed("second"));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(10))), IsOkAndHolds("first"));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(10))), IsOkAndHolds("second"));
  // An empty reply.
  Put(p.b.get(), Framed(""));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(10))), IsOkAndHolds(""));
  // A reply cut inside its header, then inside its body: each timeout loses nothing.
  const std::string whole = Framed("a reply in three pieces") + Framed("next");
  Put(p.b.get(), whole.substr(0, 2));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Milliseconds(20))).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  Put(p.b.get(), whole.substr(2, 10));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Milliseconds(20))).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  Put(p.b.get(), whole.substr(12));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(10))),
              IsOkAndHolds("a reply in three pieces"));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(10))), IsOkAndHolds("next"));
}

TEST(ReplyReaderTest, AReplyLargerThanTheSocketBufferArrivesWhole) {
  auto p = StreamSocketPair();
  ReplyReader r;
  std::string big(8 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 4096);
  std::thread writer([&] { Put(p.b.get(), Framed(big) + Framed("small after")); });
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(60))), IsOkAndHolds(big));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(60))),
              IsOkAndHolds("small after"));
  writer.join();
}

TEST(ReplyReaderTest, ALengthAboveTheLimitAndTheEndOfTheStreamAreErrors) {
  {
    auto p = StreamSocketPair();
    ReplyReader r;
    Put(p.b.get(), CPythonLengthHeader(kMaxMessage + 1));
    EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(10))).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("above the limit")));
    // The 8-byte form (more than 2 GiB) is above it too.
    ReplyReader r8;
    auto q = StreamSocketPair();
    Put(q.b.get(), CPythonLengthHeader(uint64_t{3} << 30));
    EXPECT_THAT(r8.Next(q.a.get(), Deadline::After(absl::Seconds(10))).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("above the limit")));
  }
  auto p = StreamSocketPair();
  ReplyReader r;
  Put(p.b.get(), Framed("last") + Framed("cut off").substr(0, 6));
  p.b.Reset();
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(10))), IsOkAndHolds("last"));
  EXPECT_THAT(r.Next(p.a.get(), Deadline::After(absl::Seconds(10))).status(),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("closed the connection")));
}

}  // namespace
}  // namespace mproc::manager_internal
