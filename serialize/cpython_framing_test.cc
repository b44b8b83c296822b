#include "serialize/cpython_framing.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "base/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

using testing::StreamSocketPair;

TEST(CPythonFramingTest, HeaderBytesMatchCPython) {
  EXPECT_EQ(CPythonLengthHeader(0), std::string("\0\0\0\0", 4));
  EXPECT_EQ(CPythonLengthHeader(5), std::string("\0\0\0\5", 4));
  EXPECT_EQ(CPythonLengthHeader(0x7fffffff), std::string("\x7f\xff\xff\xff", 4));
  // Above 2 GiB: -1, then an 8-byte big-endian length.
  EXPECT_EQ(CPythonLengthHeader(0x80000000ull),
            std::string("\xff\xff\xff\xff\0\0\0\0\x80\0\0\0", 12));
}

TEST(CPythonFramingTest, MessagesKeepTheirBoundaries) {
  auto p = StreamSocketPair();
  std::vector<std::string> msgs = {"a", "", "cd", std::string(16 << 20, 'z'), "tail"};
  std::thread w([&] {
    for (const auto& m : msgs) ASSERT_THAT(WriteCPythonMessage(p.a.get(), m, Deadline::Infinite()), IsOk());
  });
  for (const auto& m : msgs) {
    ASSERT_OK_AND_ASSIGN(std::string got, ReadCPythonMessage(p.b.get(), 1 << 30, Deadline::Infinite()));
    EXPECT_EQ(got.size(), m.size());
    EXPECT_TRUE(got == m);
  }
  w.join();
}

TEST(CPythonFramingTest, LongFormHeaderIsUnderstood) {
  auto p = StreamSocketPair();
  std::string wire = std::string("\xff\xff\xff\xff\0\0\0\0\0\0\0\3", 12) + "abc";
  ASSERT_EQ(::write(p.a.get(), wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
  EXPECT_THAT(ReadCPythonMessage(p.b.get(), 100, Deadline::Infinite()), IsOkAndHolds(std::string("abc")));
}

TEST(CPythonFramingTest, BadLengths) {
  {
    auto p = StreamSocketPair();
    ASSERT_EQ(::write(p.a.get(), "\xff\xff\xff\xfe", 4), 4);  // -2
    EXPECT_THAT(ReadCPythonMessage(p.b.get(), 100, Deadline::Infinite()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad message length")));
  }
  {
    auto p = StreamSocketPair();
    ASSERT_EQ(::write(p.a.get(), "\x7f\xff\xff\xff", 4), 4);  // 2 GiB, nothing follows
    std::string out;
    EXPECT_THAT(ReadCPythonMessage(p.b.get(), 256, Deadline::Infinite(), &out),
                StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("bad message length")));
    EXPECT_LT(out.capacity(), 1u << 20);
  }
  {
    auto p = StreamSocketPair();
    p.a.Reset();
    EXPECT_THAT(ReadCPythonMessage(p.b.get(), 256, Deadline::Infinite()),
                StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("peer closed")));
  }
  {
    auto p = StreamSocketPair();
    ASSERT_EQ(::write(p.a.get(), "\0\0\0\x0a" "abc", 7), 7);
    p.a.Reset();
    EXPECT_THAT(ReadCPythonMessage(p.b.get(), 256, Deadline::Infinite()),
                StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("3 of 10")));
  }
}

}  // namespace
}  // namespace mproc
