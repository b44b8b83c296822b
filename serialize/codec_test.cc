#include "serialize/codec.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "serialize/envelope.pb.h"
#include "serialize/proto_codec.h"

namespace mproc {
namespace test_types {

struct Point {
  int32_t x = 0, y = 0;
  std::string label;
  std::vector<double> weights;
  bool operator==(const Point&) const = default;
};
MPROC_CODEC_FIELDS(Point, x, y, label, weights)

struct Pixel {
  uint8_t r, g, b, a;
  bool operator==(const Pixel&) const = default;
};
MPROC_CODEC_TRIVIAL(Pixel)

class Secret {
 public:
  Secret() = default;
  Secret(int k, std::string v) : key_(k), value_(std::move(v)) {}
  bool operator==(const Secret&) const = default;
  MPROC_CODEC_FRIEND_FIELDS(Secret, key_, value_)

 private:
  int key_ = 0;
  std::string value_;
};

enum class Color : uint16_t { kRed = 1, kBlue = 700 };
MPROC_CODEC_ENUM(Color, kRed, kBlue)

// An unscoped enum without a fixed underlying type: values outside its enumerators' bits are
// undefined behaviour, so decoding must refuse them before they exist.
enum Shade { kLight, kDark };
MPROC_CODEC_ENUM(Shade, kLight, kDark)

// What MPROC_CODEC_TRIVIAL accepts and refuses (checked at compile time, member by member).
struct Flagged {
  uint8_t level;
  bool on;
};
struct Tinted {
  uint8_t level;
  Color color;
};
struct Nested {
  Pixel p;
  std::array<uint16_t, 2> xs;
};
struct NestedFlag {
  std::array<bool, 2> flags;
};
struct WithPointer {
  const char* p;
};
static_assert(serialize_internal::EveryBytePatternValid<Pixel>());
static_assert(serialize_internal::EveryBytePatternValid<Nested>());
static_assert(!serialize_internal::EveryBytePatternValid<Flagged>());
static_assert(!serialize_internal::EveryBytePatternValid<Tinted>());
static_assert(!serialize_internal::EveryBytePatternValid<NestedFlag>());
static_assert(!serialize_internal::EveryBytePatternValid<WithPointer>());

struct WithFd {
  std::string name;
  UniqueFd fd;
};
MPROC_CODEC_FIELDS(WithFd, name, fd)

}  // namespace test_types

namespace {

using ::testing::HasSubstr;
using test_types::Color;
using test_types::Pixel;
using test_types::Point;
using test_types::Secret;

// Compile-time facts.
static_assert(!kTypeCarriesFds<int>);
static_assert(!kTypeCarriesFds<std::map<std::string, std::vector<int>>>);
static_assert(kTypeCarriesFds<UniqueFd>);
static_assert(kTypeCarriesFds<std::vector<UniqueFd>>);
static_assert(kTypeCarriesFds<test_types::WithFd>);
static_assert(kTypeCarriesFds<std::variant<int, UniqueFd>>);
static_assert(Encodable<Point>);
static_assert(kMinEncodedSize<int64_t> == 8);
static_assert(kMinEncodedSize<Pixel> == 4);

template <typename T>
T RoundTrip(const T& v) {
  EncodeBuffer b;
  Encode(v, b);
  absl::StatusOr<T> out = Decode<T>(b.bytes());
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *std::move(out) : T{};
}

template <typename T>
std::string Bytes(const T& v) {
  EncodeBuffer b;
  Encode(v, b);
  return std::string(b.view());
}

TEST(CodecTest, Arithmetic) {
  EXPECT_EQ(RoundTrip<int8_t>(-128), -128);
  EXPECT_EQ(RoundTrip<uint64_t>(std::numeric_limits<uint64_t>::max()),
            std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(RoundTrip<int64_t>(std::numeric_limits<int64_t>::min()),
            std::numeric_limits<int64_t>::min());
  EXPECT_EQ(RoundTrip<double>(-0.5), -0.5);
  EXPECT_TRUE(std::isnan(RoundTrip<double>(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_EQ(RoundTrip<float>(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(RoundTrip(true), true);
  EXPECT_EQ(RoundTrip(false), false);
  EXPECT_EQ(RoundTrip('x'), 'x');
  EXPECT_EQ(RoundTrip(Color::kBlue), Color::kBlue);
  EXPECT_EQ(Bytes<int32_t>(1).size(), 4u);
}

TEST(CodecTest, Strings) {
  EXPECT_EQ(RoundTrip(std::string()), "");
  EXPECT_EQ(RoundTrip(std::string("hello")), "hello");
  std::string binary("\0\1\2\xff", 4);
  EXPECT_EQ(RoundTrip(binary), binary);
  std::string big(3 << 20, 'q');  // multi-byte varint length
  EXPECT_EQ(RoundTrip(big), big);
  // string_view encodes like string; decodes as a zero-copy view into the buffer.
  EncodeBuffer b;
  Encode(std::string_view("view me"), b);
  ASSERT_OK_AND_ASSIGN(std::string_view v, Decode<std::string_view>(b.bytes()));
  EXPECT_EQ(v, "view me");
  EXPECT_GE(reinterpret_cast<const std::byte*>(v.data()), b.data());
  EXPECT_LT(reinterpret_cast<const std::byte*>(v.data()), b.data() + b.size());
  EXPECT_EQ(Bytes(std::string("abc")), Bytes(std::string_view("abc")));
}

TEST(CodecTest, Sequences) {
  EXPECT_EQ(RoundTrip(std::vector<int>{}), std::vector<int>{});
  EXPECT_EQ(RoundTrip(std::vector<int>{1, -2, 3}), (std::vector<int>{1, -2, 3}));
  EXPECT_EQ(RoundTrip(std::vector<bool>{true, false, true}), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(RoundTrip(std::vector<std::string>{"a", "", "ccc"}),
            (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(RoundTrip(std::array<int16_t, 3>{7, 8, 9}), (std::array<int16_t, 3>{7, 8, 9}));
  EXPECT_EQ(RoundTrip(std::array<std::string, 2>{"x", "y"}), (std::array<std::string, 2>{"x", "y"}));
  EXPECT_EQ(RoundTrip(std::deque<int>{4, 5}), (std::deque<int>{4, 5}));
  std::vector<uint8_t> large(8 << 20);
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<uint8_t>(i * 7);
  EXPECT_EQ(RoundTrip(large), large);
}

TEST(CodecTest, Associative) {
  std::map<std::string, std::vector<int>> m{{"b", {1}}, {"a", {}}, {"c", {2, 3}}};
  EXPECT_EQ(RoundTrip(m), m);
  std::set<int> s{5, 1, 3};
  EXPECT_EQ(RoundTrip(s), s);
  std::unordered_map<std::string, int> um{{"x", 1}, {"y", 2}, {"z", 3}};
  EXPECT_EQ(RoundTrip(um), um);
  std::unordered_set<int64_t> us{10, 20, 30, 40};
  EXPECT_EQ(RoundTrip(us), us);
  EXPECT_EQ(RoundTrip(std::map<int, int>{}), (std::map<int, int>{}));
}

TEST(CodecTest, UnorderedContainersEncodeDeterministically) {
  std::unordered_map<int, std::string> a, b;
  for (int i = 0; i < 200; ++i) a[i] = std::to_string(i);
  for (int i = 199; i >= 0; --i) b[i] = std::to_string(i);
  b.rehash(1024);  // a different bucket order
  EXPECT_EQ(Bytes(a), Bytes(b));
  // And the same bytes as the ordered map with the same contents.
  std::map<int, std::string> ordered(a.begin(), a.end());
  EXPECT_EQ(Bytes(a), Bytes(ordered));
}

TEST(CodecTest, ProductsAndSums) {
  EXPECT_EQ(RoundTrip(std::pair<int, std::string>{1, "one"}), (std::pair<int, std::string>{1, "one"}));
  auto t = std::make_tuple(1, std::string("two"), 3.0, std::vector<int>{4});
  EXPECT_EQ(RoundTrip(t), t);
  EXPECT_EQ(RoundTrip(std::tuple<>{}), std::tuple<>{});
  EXPECT_EQ(RoundTrip(std::optional<int>{}), std::nullopt);
  EXPECT_EQ(RoundTrip(std::optional<std::string>{"x"}), std::optional<std::string>{"x"});
  using V = std::variant<std::monostate, int, std::string, std::vector<int>>;
  for (const V& v : {V{}, V{7}, V{std::string("s")}, V{std::vector<int>{1, 2}}}) {
    EXPECT_EQ(RoundTrip(v), v);
  }
}

TEST(CodecTest, AbslTypes) {
  for (absl::Duration d : {absl::ZeroDuration(), absl::Nanoseconds(1), absl::Nanoseconds(-1),
                           absl::Seconds(-3) + absl::Nanoseconds(1) / 4, absl::Hours(1e6),
                           absl::InfiniteDuration(), -absl::InfiniteDuration()}) {
    EXPECT_EQ(RoundTrip(d), d);
  }
  for (absl::Time t : {absl::UnixEpoch(), absl::Now(), absl::InfiniteFuture(), absl::InfinitePast(),
                       absl::FromUnixSeconds(-1234567)}) {
    EXPECT_EQ(RoundTrip(t), t);
  }
  absl::Status s = absl::NotFoundError("no such thing");
  s.SetPayload("type.test/x", absl::Cord("payload bytes"));
  EncodeBuffer b;
  Encode(s, b);
  absl::Status back;
  MPROC_ASSERT_OK(DecodeInto(b.bytes(), back));
  b.Clear();
  Encode(absl::OkStatus(), b);
  absl::Status ok_back = absl::InternalError("overwritten");
  MPROC_ASSERT_OK(DecodeInto(b.bytes(), ok_back));
  EXPECT_TRUE(ok_back.ok());
  EXPECT_EQ(back, s);
  EXPECT_EQ(std::string(*back.GetPayload("type.test/x")), "payload bytes");
}

TEST(CodecTest, UserTypes) {
  Point p{3, -4, "pt", {0.5, 1.5}};
  EXPECT_EQ(RoundTrip(p), p);
  Pixel px{1, 2, 3, 4};
  EXPECT_EQ(RoundTrip(px), px);
  EXPECT_EQ(Bytes(px).size(), 4u);  // one memcpy, no framing
  EXPECT_EQ(RoundTrip(std::vector<Pixel>{{1, 2, 3, 4}, {5, 6, 7, 8}}),
            (std::vector<Pixel>{{1, 2, 3, 4}, {5, 6, 7, 8}}));
  EXPECT_EQ(RoundTrip(Secret(9, "nine")), Secret(9, "nine"));
}

TEST(CodecTest, ProtobufMessages) {
  serialize::Envelope e;
  e.set_kind(3);
  e.set_id(99);
  e.set_payload("abc");
  e.mutable_error()->set_what("boom");
  serialize::Envelope back = RoundTrip(e);
  EXPECT_EQ(back.SerializeAsString(), e.SerializeAsString());
  EXPECT_EQ(RoundTrip(std::vector<serialize::Envelope>{e, e}).size(), 2u);
}

TEST(CodecTest, DecodeIntoReusesStorage) {
  std::vector<std::string> v{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
  const char* storage = v[0].data();
  EncodeBuffer b;
  Encode(std::vector<std::string>{"bbbbbbbbbbbbbbbbbbbbbbbbb"}, b);
  MPROC_ASSERT_OK(DecodeInto(b.bytes(), v));
  EXPECT_EQ(v[0], "bbbbbbbbbbbbbbbbbbbbbbbbb");
  EXPECT_EQ(v[0].data(), storage);  // the string's heap buffer was reused
  // And the encode buffer keeps its capacity across Clear().
  size_t cap = b.capacity();
  b.Clear();
  Encode(std::string(10, 'x'), b);
  EXPECT_EQ(b.capacity(), cap);
}

TEST(CodecTest, ZeroCopySpanView) {
  std::vector<double> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<double>(i) / 3;
  EncodeBuffer b;
  Encode(std::span<const double>(data), b);
  ASSERT_OK_AND_ASSIGN(std::span<const double> view, Decode<std::span<const double>>(b.bytes()));
  ASSERT_EQ(view.size(), data.size());
  EXPECT_TRUE(std::equal(view.begin(), view.end(), data.begin()));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(view.data()) % alignof(double), 0u);
  EXPECT_GE(reinterpret_cast<const std::byte*>(view.data()), b.data());  // in place
  // Interchangeable with vector<double> on the wire.
  ASSERT_OK_AND_ASSIGN(std::vector<double> copy, Decode<std::vector<double>>(b.bytes()));
  EXPECT_EQ(copy, data);
  // A misaligned buffer refuses the view rather than making one.
  std::vector<std::byte> shifted(b.size() + 1);
  std::memcpy(shifted.data() + 1, b.data(), b.size());
  std::span<const std::byte> mis(shifted.data() + 1, b.size());
  EXPECT_THAT(Decode<std::span<const double>>(mis),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("misaligned")));
}

TEST(CodecTest, FdAttachments) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  test_types::WithFd w{"pipe", UniqueFd(p[1])};
  UniqueFd reader(p[0]);
  EncodeBuffer b;
  Encode(w, b);
  ASSERT_EQ(b.fds().size(), 1u);
  EXPECT_EQ(b.fds()[0], p[1]);
  // Simulate the receiver: it gets its own descriptor for the same pipe.
  std::vector<UniqueFd> received;
  received.emplace_back(::fcntl(p[1], F_DUPFD_CLOEXEC, 0));
  ASSERT_OK_AND_ASSIGN(test_types::WithFd got, Decode<test_types::WithFd>(b.bytes(), std::move(received)));
  EXPECT_EQ(got.name, "pipe");
  ASSERT_TRUE(got.fd.ok());
  ASSERT_EQ(::write(got.fd.get(), "z", 1), 1);
  char c;
  ASSERT_EQ(::read(reader.get(), &c, 1), 1);
  EXPECT_EQ(c, 'z');
  // A value whose fd index points past the attached fds is malformed.
  EXPECT_THAT(Decode<test_types::WithFd>(b.bytes()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fd index 0")));
  // Fds the value did not claim are an error (and are closed).
  std::vector<UniqueFd> extra;
  extra.emplace_back(::fcntl(p[0], F_DUPFD_CLOEXEC, 0));
  EXPECT_THAT(Decode<int>(AsBytes(Bytes(5)), std::move(extra)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("did not claim")));
}

// ---------------------------------------------------------------- hostile input

TEST(CodecTest, TruncationAtEveryOffsetIsAClearError) {
  using T = std::tuple<std::map<std::string, std::vector<int>>, std::optional<Point>,
                       std::variant<int, std::string>, absl::Status, absl::Duration>;
  T v{{{"k1", {1, 2, 3}}, {"k2", {}}}, Point{1, 2, "p", {3.5}}, std::string("var"),
      absl::InternalError("e"), absl::Milliseconds(5)};
  std::string full = Bytes(v);
  ASSERT_OK_AND_ASSIGN(T back, Decode<T>(AsBytes(full)));
  for (size_t cut = 0; cut < full.size(); ++cut) {
    absl::StatusOr<T> r = Decode<T>(AsBytes(std::string_view(full).substr(0, cut)));
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument)) << "cut at " << cut;
  }
}

TEST(CodecTest, TrailingBytesAreRejected) {
  std::string b = Bytes(int32_t{1}) + "x";
  EXPECT_THAT(Decode<int32_t>(AsBytes(b)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("trailing")));
}

TEST(CodecTest, HugeCountsAreRejectedBeforeAllocating) {
  // A vector claiming 2^62 strings in 12 bytes.
  EncodeBuffer b;
  b.PutVarint(uint64_t{1} << 62);
  b.Append("abc", 3);
  EXPECT_THAT(Decode<std::vector<std::string>>(b.bytes()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exceeds")));
  EXPECT_THAT(Decode<std::vector<int64_t>>(b.bytes()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exceeds")));
  EXPECT_THAT(Decode<std::string>(b.bytes()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exceeds")));
  EXPECT_THAT((Decode<std::map<int, int>>(b.bytes())), StatusIs(absl::StatusCode::kInvalidArgument));
  // Zero-size elements are capped too.
  EXPECT_THAT(Decode<std::vector<std::tuple<>>>(b.bytes()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

// Hostile bytes never become an enum value that is not one of its enumerators: alone, in a
// vector (no longer one memcpy), or inside a struct.
TEST(CodecTest, EnumsDecodeOnlyToTheirEnumerators) {
  EXPECT_EQ(RoundTrip(Color::kRed), Color::kRed);
  EXPECT_EQ(RoundTrip(test_types::kDark), test_types::kDark);
  const uint16_t bad = 2;
  EXPECT_THAT(Decode<Color>(AsBytes(std::string(reinterpret_cast<const char*>(&bad), 2))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("enumerators")));
  const int shade = 1 << 20;
  EXPECT_THAT(Decode<test_types::Shade>(
                  AsBytes(std::string(reinterpret_cast<const char*>(&shade), sizeof(shade)))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("enumerators")));
  std::vector<Color> colors = {Color::kBlue, Color::kRed, Color::kBlue};
  EXPECT_EQ(RoundTrip(colors), colors);
  std::string bytes = Bytes(colors);
  bytes[bytes.size() - 2] = 3;  // the last color's low byte: 700 becomes another value
  EXPECT_THAT(Decode<std::vector<Color>>(AsBytes(bytes)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("enumerators")));
}

TEST(CodecTest, MalformedScalarsAndTags) {
  EXPECT_THAT(Decode<bool>(AsBytes(std::string("\x02", 1))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bool")));
  EXPECT_THAT(Decode<std::optional<int>>(AsBytes(std::string("\x05", 1))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("optional")));
  EXPECT_THAT((Decode<std::variant<int, char>>(AsBytes(std::string("\x02\x00", 2)))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("variant index")));
  absl::Status decoded;
  EXPECT_THAT(DecodeInto(AsBytes(std::string("\x63\x00\x00", 3)), decoded),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status code")));
  EXPECT_THAT(Decode<absl::Duration>(AsBytes(std::string("\x07", 1))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duration")));
  // An 11-byte varint.
  EXPECT_THAT(Decode<std::string>(AsBytes(std::string(11, '\xff'))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("varint")));
  // Duplicate keys in a map.
  std::string dup = Bytes(std::vector<std::pair<int, int>>{{1, 1}, {1, 2}});
  EXPECT_THAT((Decode<std::map<int, int>>(AsBytes(dup))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
  EXPECT_THAT(Decode<serialize::Envelope>(AsBytes(std::string("\x03\xff\xff\xff", 4))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("protobuf")));
}

TEST(CodecTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(12345);
  using T = std::tuple<std::vector<std::string>, std::map<int, std::optional<double>>,
                       std::variant<std::monostate, Point, std::set<int>>, absl::Status>;
  int ok = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    absl::StatusOr<T> r = Decode<T>(AsBytes(s));
    if (r.ok()) ++ok;
    else EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  }
  SUCCEED() << ok << " random inputs decoded";
}

}  // namespace
}  // namespace mproc

namespace mproc {
namespace {

int Triple(int x) { return 3 * x; }

TEST(CodecTest, FunctionPointersTravelAsCodeReferences) {
  int (*fn)(int) = &Triple;
  EncodeBuffer b;
  Encode(fn, b);
  ASSERT_OK_AND_ASSIGN(auto back, Decode<int (*)(int)>(b.bytes()));
  EXPECT_EQ(back, fn);
  EXPECT_EQ(back(7), 21);
  using Fn = int (*)(int);
  Fn null_fn = nullptr;
  EncodeBuffer n;
  Encode(null_fn, n);
  ASSERT_OK_AND_ASSIGN(Fn back_null, Decode<Fn>(n.bytes()));
  EXPECT_EQ(back_null, nullptr);
  // A reference to an object this process has not loaded is a clear decode error.
  EncodeBuffer bad;
  uint8_t tag = 1;
  bad.Append(&tag, 1);
  Encode(std::string("build-id:0123"), bad);
  bad.PutVarint(16);
  EXPECT_THAT(Decode<Fn>(bad.bytes()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("build-id:0123")));
}

}  // namespace
}  // namespace mproc
