// serialize/codec.h — compile-time-checked codecs: mproc's pickle.
//
// Every argument, result, queue item and control message that crosses a process boundary is
// encoded by a Codec<T>. A type without one is a compile error that says how to add it.
//
//   EncodeBuffer buf;                                  // reuse it: Clear() keeps capacity
//   Encode(std::map<std::string, std::vector<int>>{{"a", {1, 2}}}, buf);
//   absl::StatusOr<std::map<std::string, std::vector<int>>> m =
//       Decode<std::map<std::string, std::vector<int>>>(buf.bytes());
//   MPROC_RETURN_IF_ERROR(DecodeInto(buf.bytes(), existing));   // reuses existing's storage
//
// Supported out of the box: arithmetic types; std::string (std::string_view encodes,
// and decodes as a zero-copy view); std::vector, std::array, std::deque, std::map, std::set,
// std::unordered_map/set (encoded in key order, so encoding is deterministic); std::pair,
// std::tuple, std::optional, std::variant, std::monostate; absl::Status, absl::Duration,
// absl::Time; UniqueFd (an fd attachment); protobuf messages (serialize/proto_codec.h).
//
// Your own types opt in with one line in the type's namespace:
//
//   struct Point { int32_t x, y; std::string label; };
//   MPROC_CODEC_FIELDS(Point, x, y, label)          // field by field
//
//   struct Pixel { uint8_t r, g, b, a; };
//   MPROC_CODEC_TRIVIAL(Pixel)                       // one memcpy; refused if Pixel has padding,
//                                                    // or a bool, enum or pointer member
//
//   enum class Color : uint16_t { kRed = 1, kBlue = 700 };
//   MPROC_CODEC_ENUM(Color, kRed, kBlue)             // decoding refuses any other value
//
// (inside a class, for private members: MPROC_CODEC_FRIEND_FIELDS(Type, fields...)).
//
// Wire format (same machine, same build: host byte order): arithmetic values as their bytes;
// lengths and counts as LEB128 varints; bulk arrays of trivially-copyable elements as a count,
// zero padding to the element's alignment, then one memcpy — so a decoder can view them in
// place (std::span<const T>, zero-copy) or copy them (std::vector<T>).
//
// Hostile input: decoding any byte string returns a value or INVALID_ARGUMENT naming the
// offset (a bool is 0 or 1, an enum one of its declared enumerators, and TRIVIAL types hold
// nothing else with invalid byte patterns, so no decoded value is ever an invalid one); counts are checked against the bytes that remain before anything is reserved, so
// no input makes the decoder allocate more than the input's own size (times the element's
// in-memory/encoded size ratio).
//
// Thread-safety: codecs are stateless; buffers are not thread-safe.

#ifndef MPROC_SERIALIZE_CODEC_H_
#define MPROC_SERIALIZE_CODEC_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"
#include "serialize/buffer.h"

namespace mproc {

template <typename T>
inline constexpr bool kDependentFalse = false;

// The primary template: a type with no codec lands here.
template <typename T>
struct Codec {
  static_assert(kDependentFalse<T>,
                "mproc: this type has no Codec, so it cannot cross a process boundary. Add "
                "MPROC_CODEC_FIELDS(Type, field1, field2, ...) next to the type (or "
                "MPROC_CODEC_TRIVIAL(Type) for a padding-free trivially copyable struct), or "
                "specialize mproc::Codec<Type> with Encode/Decode (see serialize/codec.h).");
};

// A type has a codec when Codec<T> is not the primary template.
template <typename T>
concept Encodable = requires(EncodeBuffer& b, const T& v) { Codec<T>::Encode(b, v); };

// Whether values of T carry file descriptors (which travel only over AF_UNIX sockets).
template <typename T>
inline constexpr bool kTypeCarriesFds = Codec<T>::kCarriesFds;

// The fewest bytes any encoding of T takes (bounds element counts when decoding).
template <typename T>
inline constexpr size_t kMinEncodedSize = Codec<T>::kMinSize;

namespace serialize_internal {

// Containers of elements whose encoding can be empty are capped at this many elements.
inline constexpr uint64_t kMaxZeroSizeElements = 1 << 20;

template <typename T>
bool CheckCount(DecodeReader& r, uint64_t n) {
  constexpr size_t kMin = kMinEncodedSize<T>;
  if constexpr (kMin == 0) {
    if (n > kMaxZeroSizeElements) return r.Fail("element count exceeds the limit");
  } else {
    if (n > r.remaining() / kMin) return r.Fail("element count exceeds the remaining input");
  }
  return true;
}

template <typename T>
concept HasFieldList = requires(const T* p) { MprocCodecFields(p); };
template <typename T>
concept HasTrivialOptIn = requires(const T* p) { MprocCodecTrivial(p); };
template <typename T>
concept HasEnumValues = std::is_enum_v<T> && requires(const T* p) { MprocCodecEnumValues(p); };

// Element types whose arrays encode as one memcpy: every byte pattern of them is a valid value
// (never bool or an enum, whose other bytes would decode into invalid values).
template <typename T>
inline constexpr bool kBulk =
    (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) || HasTrivialOptIn<T>;

// ---- MPROC_CODEC_TRIVIAL's check: no member may have invalid byte patterns -----------------
//
// The members of an aggregate, found without reflection: the number of initializers it takes
// (each member takes one AnyField, which converts to anything), then a structured binding of
// that many names. Limits: up to 16 members, no base classes, no C arrays (std::array is fine).

struct AnyField {
  template <typename U>
  constexpr operator U() const noexcept;  // unevaluated contexts only
};

template <typename T, size_t... I>
constexpr bool BraceInitializable(std::index_sequence<I...>) {
  return requires { T{(static_cast<void>(I), AnyField{})...}; };
}

template <typename T, size_t N = 0>
constexpr size_t AggregateFieldCount() {
  if constexpr (N < 17 && BraceInitializable<T>(std::make_index_sequence<N + 1>())) {
    return AggregateFieldCount<T, N + 1>();
  } else {
    return N;
  }
}

// The members' types, as a tuple of references.
template <typename T>
constexpr auto TieFields(T& t) {
  constexpr size_t n = AggregateFieldCount<T>();
  // clang-format off
  if constexpr (n == 1) { auto& [a] = t; return std::tie(a); }
  else if constexpr (n == 2) { auto& [a, b] = t; return std::tie(a, b); }
  else if constexpr (n == 3) { auto& [a, b, c] = t; return std::tie(a, b, c); }
  else if constexpr (n == 4) { auto& [a, b, c, d] = t; return std::tie(a, b, c, d); }
  else if constexpr (n == 5) { auto& [a, b, c, d, e] = t; return std::tie(a, b, c, d, e); }
  else if constexpr (n == 6) { auto& [a, b, c, d, e, f] = t; return std::tie(a, b, c, d, e, f); }
  else if constexpr (n == 7) { auto& [a, b, c, d, e, f, g] = t; return std::tie(a, b, c, d, e, f, g); }
  else if constexpr (n == 8) { auto& [a, b, c, d, e, f, g, h] = t; return std::tie(a, b, c, d, e, f, g, h); }
  else if constexpr (n == 9) { auto& [a, b, c, d, e, f, g, h, i] = t; return std::tie(a, b, c, d, e, f, g, h, i); }
  else if constexpr (n == 10) { auto& [a, b, c, d, e, f, g, h, i, j] = t; return std::tie(a, b, c, d, e, f, g, h, i, j); }
  else if constexpr (n == 11) { auto& [a, b, c, d, e, f, g, h, i, j, k] = t; return std::tie(a, b, c, d, e, f, g, h, i, j, k); }
  else if constexpr (n == 12) { auto& [a, b, c, d, e, f, g, h, i, j, k, l] = t; return std::tie(a, b, c, d, e, f, g, h, i, j, k, l); }
  else if constexpr (n == 13) { auto& [a, b, c, d, e, f, g, h, i, j, k, l, m] = t; return std::tie(a, b, c, d, e, f, g, h, i, j, k, l, m); }
  else if constexpr (n == 14) { auto& [a, b, c, d, e, f, g, h, i, j, k, l, m, o] = t; return std::tie(a, b, c, d, e, f, g, h, i, j, k, l, m, o); }
  else if constexpr (n == 15) { auto& [a, b, c, d, e, f, g, h, i, j, k, l, m, o, p] = t; return std::tie(a, b, c, d, e, f, g, h, i, j, k, l, m, o, p); }
  else if constexpr (n == 16) { auto& [a, b, c, d, e, f, g, h, i, j, k, l, m, o, p, q] = t; return std::tie(a, b, c, d, e, f, g, h, i, j, k, l, m, o, p, q); }
  else { return std::tuple<>(); }
  // clang-format on
}

template <typename T>
struct IsStdArray : std::false_type {};
template <typename E, size_t N>
struct IsStdArray<std::array<E, N>> : std::true_type {
  using Element = E;
};

template <typename T>
constexpr bool EveryBytePatternValid();

template <typename Tuple, size_t... I>
constexpr bool MembersValid(std::index_sequence<I...>) {
  return (EveryBytePatternValid<std::remove_cvref_t<std::tuple_element_t<I, Tuple>>>() && ...);
}

// Whether every byte pattern of T is a value of T: arithmetic types but bool, std::arrays and
// aggregates of such (checked member by member), and types already opted in with
// MPROC_CODEC_TRIVIAL.
template <typename T>
constexpr bool EveryBytePatternValid() {
  if constexpr (std::is_same_v<T, bool> || std::is_enum_v<T> || std::is_pointer_v<T> ||
                std::is_member_pointer_v<T>) {
    return false;
  } else if constexpr (std::is_arithmetic_v<T>) {
    return true;
  } else if constexpr (std::is_array_v<T>) {
    return false;  // a C array member: use std::array (the member walk cannot see it)
  } else if constexpr (IsStdArray<T>::value) {
    return EveryBytePatternValid<typename IsStdArray<T>::Element>();
  } else if constexpr (std::is_aggregate_v<T>) {
    using Tuple = decltype(TieFields(std::declval<T&>()));
    return std::tuple_size_v<Tuple> > 0 &&
           MembersValid<Tuple>(std::make_index_sequence<std::tuple_size_v<Tuple>>());
  } else {
    return false;
  }
}

template <typename T>
void EncodeBulk(EncodeBuffer& b, const T* p, size_t n) {
  b.PutVarint(n);
  if (n == 0) return;
  b.AlignTo(alignof(T) < 16 ? alignof(T) : 16);
  b.Append(p, n * sizeof(T));
}

// Reads a bulk array header; returns the element bytes (aligned in the encoding) or nullptr.
template <typename T>
const std::byte* TakeBulk(DecodeReader& r, uint64_t* n) {
  if (!r.ReadVarint(n)) return nullptr;
  if (*n == 0) return reinterpret_cast<const std::byte*>("");
  if (*n > r.remaining() / sizeof(T) || !r.Align(alignof(T) < 16 ? alignof(T) : 16) ||
      *n > r.remaining() / sizeof(T)) {
    r.Fail("array length exceeds the remaining input");
    return nullptr;
  }
  return r.Take(*n * sizeof(T));
}

}  // namespace serialize_internal

// ------------------------------------------------------------------ scalars

template <typename T>
  requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
struct Codec<T> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = sizeof(T);
  static void Encode(EncodeBuffer& b, const T& v) { b.Append(&v, sizeof(T)); }
  static bool Decode(DecodeReader& r, T& out) { return r.Read(&out, sizeof(T)); }
};

template <>
struct Codec<bool> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const bool& v) {
    uint8_t x = v ? 1 : 0;
    b.Append(&x, 1);
  }
  static bool Decode(DecodeReader& r, bool& out) {
    uint8_t x;
    if (!r.Read(&x, 1)) return false;
    if (x > 1) return r.Fail("bool byte is neither 0 nor 1");
    out = x == 1;
    return true;
  }
};

// Enums declared with MPROC_CODEC_ENUM(Type, enumerators...): a decoded value must be one of
// them (INVALID_ARGUMENT otherwise), so hostile bytes never make an enumerator no switch
// expects, nor (for an enum without a fixed underlying type) undefined behaviour.
template <typename T>
  requires serialize_internal::HasEnumValues<T>
struct Codec<T> {
  using U = std::underlying_type_t<T>;
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = sizeof(U);
  static void Encode(EncodeBuffer& b, const T& v) {
    const U u = static_cast<U>(v);
    b.Append(&u, sizeof(U));
  }
  static bool Decode(DecodeReader& r, T& out) {
    U u;
    if (!r.Read(&u, sizeof(U))) return false;
    for (T v : MprocCodecEnumValues(static_cast<const T*>(nullptr))) {
      if (static_cast<U>(v) == u) {
        out = v;
        return true;
      }
    }
    return r.Fail("enum value is not one of its enumerators");
  }
};

template <>
struct Codec<std::monostate> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 0;
  static void Encode(EncodeBuffer&, const std::monostate&) {}
  static bool Decode(DecodeReader&, std::monostate&) { return true; }
};

// ------------------------------------------------------------------ strings

template <>
struct Codec<std::string> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const std::string& s) {
    b.PutVarint(s.size());
    b.Append(s.data(), s.size());
  }
  static bool Decode(DecodeReader& r, std::string& out) {
    uint64_t n = 0;
    if (!r.ReadVarint(&n)) return false;
    if (n > r.remaining()) return r.Fail("string length exceeds the remaining input");
    const std::byte* p = r.Take(n);
    out.assign(reinterpret_cast<const char*>(p), n);  // reuses out's capacity
    return true;
  }
};

// Encodes like std::string. Decoding gives a view into the input buffer (zero-copy): valid
// only while that buffer lives.
template <>
struct Codec<std::string_view> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const std::string_view& s) {
    b.PutVarint(s.size());
    b.Append(s.data(), s.size());
  }
  static bool Decode(DecodeReader& r, std::string_view& out) {
    uint64_t n;
    if (!r.ReadVarint(&n)) return false;
    if (n > r.remaining()) return r.Fail("string length exceeds the remaining input");
    const std::byte* p = r.Take(n);
    out = std::string_view(reinterpret_cast<const char*>(p), n);
    return true;
  }
};

// ------------------------------------------------------------------ bulk spans (zero-copy)

// std::span<const T> of trivially-copyable elements: encodes as one memcpy; decodes as a view
// into the input buffer (zero-copy, valid while the buffer lives). Interchangeable on the wire
// with std::vector<T>.
template <typename T>
  requires serialize_internal::kBulk<T>
struct Codec<std::span<const T>> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const std::span<const T>& s) {
    serialize_internal::EncodeBulk(b, s.data(), s.size());
  }
  static bool Decode(DecodeReader& r, std::span<const T>& out) {
    uint64_t n;
    const std::byte* p = serialize_internal::TakeBulk<T>(r, &n);
    if (p == nullptr) return false;
    if (n > 0 && reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) {
      return r.Fail("zero-copy view would be misaligned (decode into a std::vector instead)");
    }
    out = std::span<const T>(reinterpret_cast<const T*>(p), n);
    return true;
  }
};

// ------------------------------------------------------------------ sequences

template <typename T, typename A>
  requires Encodable<T>
struct Codec<std::vector<T, A>> {
  static constexpr bool kCarriesFds = kTypeCarriesFds<T>;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const std::vector<T, A>& v) {
    if constexpr (serialize_internal::kBulk<T>) {
      serialize_internal::EncodeBulk(b, v.data(), v.size());
    } else {
      b.PutVarint(v.size());
      for (const T& e : v) Codec<T>::Encode(b, e);
    }
  }
  static bool Decode(DecodeReader& r, std::vector<T, A>& out) {
    if constexpr (serialize_internal::kBulk<T>) {
      uint64_t n;
      const std::byte* p = serialize_internal::TakeBulk<T>(r, &n);
      if (p == nullptr) return false;
      out.resize(n);
      if (n) std::memcpy(out.data(), p, n * sizeof(T));
      return true;
    } else {
      uint64_t n;
      if (!r.ReadVarint(&n) || !serialize_internal::CheckCount<T>(r, n)) return false;
      out.resize(n);  // existing elements keep their storage for reuse
      for (auto&& e : out) {
        if constexpr (std::is_same_v<T, bool>) {
          bool x;
          if (!Codec<bool>::Decode(r, x)) return false;
          e = x;
        } else {
          if (!Codec<T>::Decode(r, e)) return false;
        }
      }
      return true;
    }
  }
};

template <typename T, size_t N>
  requires Encodable<T>
struct Codec<std::array<T, N>> {
  static constexpr bool kCarriesFds = kTypeCarriesFds<T>;
  static constexpr size_t kMinSize = N * kMinEncodedSize<T>;
  static void Encode(EncodeBuffer& b, const std::array<T, N>& v) {
    if constexpr (serialize_internal::kBulk<T>) {
      b.Append(v.data(), sizeof(T) * N);
    } else {
      for (const T& e : v) Codec<T>::Encode(b, e);
    }
  }
  static bool Decode(DecodeReader& r, std::array<T, N>& out) {
    if constexpr (serialize_internal::kBulk<T>) {
      return r.Read(out.data(), sizeof(T) * N);
    } else {
      for (T& e : out) {
        if (!Codec<T>::Decode(r, e)) return false;
      }
      return true;
    }
  }
};

template <typename T, typename A>
  requires Encodable<T>
struct Codec<std::deque<T, A>> {
  static constexpr bool kCarriesFds = kTypeCarriesFds<T>;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const std::deque<T, A>& v) {
    b.PutVarint(v.size());
    for (const T& e : v) Codec<T>::Encode(b, e);
  }
  static bool Decode(DecodeReader& r, std::deque<T, A>& out) {
    uint64_t n;
    if (!r.ReadVarint(&n) || !serialize_internal::CheckCount<T>(r, n)) return false;
    out.resize(n);
    for (T& e : out) {
      if (!Codec<T>::Decode(r, e)) return false;
    }
    return true;
  }
};

// ------------------------------------------------------------------ associative containers

namespace serialize_internal {

// Encodes entries in ascending key order. Ordered containers already iterate that way;
// unordered ones are sorted first (so equal containers always encode to equal bytes).
template <typename C, typename EncodeEntry>
void EncodeSorted(EncodeBuffer& b, const C& c, EncodeEntry&& encode_entry, bool ordered) {
  b.PutVarint(c.size());
  if (ordered) {
    for (const auto& e : c) encode_entry(e);
    return;
  }
  std::vector<const typename C::value_type*> sorted;
  sorted.reserve(c.size());
  for (const auto& e : c) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
    if constexpr (requires { a->first; }) {
      return a->first < b->first;
    } else {
      return *a < *b;
    }
  });
  for (const auto* e : sorted) encode_entry(*e);
}

template <typename M, typename K, typename V>
bool DecodeMap(DecodeReader& r, M& out) {
  uint64_t n;
  if (!r.ReadVarint(&n) || !CheckCount<K>(r, n)) return false;
  out.clear();
  if constexpr (requires { out.reserve(n); }) out.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    K k;
    V v;
    if (!Codec<K>::Decode(r, k) || !Codec<V>::Decode(r, v)) return false;
    if (!out.emplace(std::move(k), std::move(v)).second) return r.Fail("duplicate map key");
  }
  return true;
}

template <typename S, typename K>
bool DecodeSet(DecodeReader& r, S& out) {
  uint64_t n;
  if (!r.ReadVarint(&n) || !CheckCount<K>(r, n)) return false;
  out.clear();
  if constexpr (requires { out.reserve(n); }) out.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    K k;
    if (!Codec<K>::Decode(r, k)) return false;
    if (!out.insert(std::move(k)).second) return r.Fail("duplicate set element");
  }
  return true;
}

}  // namespace serialize_internal

namespace serialize_internal {

// The codec of every map type: entries in key order (`kOrdered` says whether iteration
// already is), decoded with a duplicate-key check.
template <typename M, typename K, typename V, bool kOrdered>
struct MapCodec {
  static constexpr bool kCarriesFds = kTypeCarriesFds<K> || kTypeCarriesFds<V>;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const M& m) {
    EncodeSorted(
        b, m,
        [&](const auto& e) {
          Codec<K>::Encode(b, e.first);
          Codec<V>::Encode(b, e.second);
        },
        kOrdered);
  }
  static bool Decode(DecodeReader& r, M& out) { return DecodeMap<M, K, V>(r, out); }
};

// The same for every set type.
template <typename S, typename K, bool kOrdered>
struct SetCodec {
  static constexpr bool kCarriesFds = kTypeCarriesFds<K>;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const S& s) {
    EncodeSorted(b, s, [&](const K& k) { Codec<K>::Encode(b, k); }, kOrdered);
  }
  static bool Decode(DecodeReader& r, S& out) { return DecodeSet<S, K>(r, out); }
};

}  // namespace serialize_internal

template <typename K, typename V, typename C, typename A>
  requires(Encodable<K> && Encodable<V>)
struct Codec<std::map<K, V, C, A>>
    : serialize_internal::MapCodec<std::map<K, V, C, A>, K, V, /*kOrdered=*/true> {};

template <typename K, typename V, typename H, typename E, typename A>
  requires(Encodable<K> && Encodable<V>)
struct Codec<std::unordered_map<K, V, H, E, A>>
    : serialize_internal::MapCodec<std::unordered_map<K, V, H, E, A>, K, V, /*kOrdered=*/false> {};

template <typename K, typename C, typename A>
  requires Encodable<K>
struct Codec<std::set<K, C, A>>
    : serialize_internal::SetCodec<std::set<K, C, A>, K, /*kOrdered=*/true> {};

template <typename K, typename H, typename E, typename A>
  requires Encodable<K>
struct Codec<std::unordered_set<K, H, E, A>>
    : serialize_internal::SetCodec<std::unordered_set<K, H, E, A>, K, /*kOrdered=*/false> {};

// ------------------------------------------------------------------ products and sums

template <typename A, typename B>
  requires(Encodable<A> && Encodable<B>)
struct Codec<std::pair<A, B>> {
  static constexpr bool kCarriesFds = kTypeCarriesFds<A> || kTypeCarriesFds<B>;
  static constexpr size_t kMinSize = kMinEncodedSize<A> + kMinEncodedSize<B>;
  static void Encode(EncodeBuffer& b, const std::pair<A, B>& p) {
    Codec<A>::Encode(b, p.first);
    Codec<B>::Encode(b, p.second);
  }
  static bool Decode(DecodeReader& r, std::pair<A, B>& out) {
    return Codec<A>::Decode(r, out.first) && Codec<B>::Decode(r, out.second);
  }
};

template <typename... Ts>
  requires(Encodable<Ts> && ...)
struct Codec<std::tuple<Ts...>> {
  static constexpr bool kCarriesFds = (false || ... || mproc::kTypeCarriesFds<Ts>);
  static constexpr size_t kMinSize = (size_t{0} + ... + kMinEncodedSize<Ts>);
  static void Encode(EncodeBuffer& b, const std::tuple<Ts...>& t) {
    std::apply([&](const auto&... e) { (Codec<std::decay_t<decltype(e)>>::Encode(b, e), ...); }, t);
  }
  static bool Decode(DecodeReader& r, std::tuple<Ts...>& out) {
    return std::apply(
        [&](auto&... e) { return (Codec<std::decay_t<decltype(e)>>::Decode(r, e) && ...); }, out);
  }
};

template <typename T>
  requires Encodable<T>
struct Codec<std::optional<T>> {
  static constexpr bool kCarriesFds = kTypeCarriesFds<T>;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const std::optional<T>& o) {
    uint8_t has = o.has_value() ? 1 : 0;
    b.Append(&has, 1);
    if (o) Codec<T>::Encode(b, *o);
  }
  static bool Decode(DecodeReader& r, std::optional<T>& out) {
    uint8_t has;
    if (!r.Read(&has, 1)) return false;
    if (has > 1) return r.Fail("optional flag is neither 0 nor 1");
    if (!has) {
      out.reset();
      return true;
    }
    if (!out) out.emplace();
    return Codec<T>::Decode(r, *out);
  }
};

template <typename... Ts>
  requires(Encodable<Ts> && ...)
struct Codec<std::variant<Ts...>> {
  static constexpr bool kCarriesFds = (false || ... || mproc::kTypeCarriesFds<Ts>);
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const std::variant<Ts...>& v) {
    b.PutVarint(v.index());
    std::visit([&](const auto& e) { Codec<std::decay_t<decltype(e)>>::Encode(b, e); }, v);
  }
  static bool Decode(DecodeReader& r, std::variant<Ts...>& out) {
    uint64_t index;
    if (!r.ReadVarint(&index)) return false;
    if (index >= sizeof...(Ts)) return r.Fail("variant index out of range");
    return DecodeAlt(r, out, index, std::index_sequence_for<Ts...>{});
  }

 private:
  template <size_t... I>
  static bool DecodeAlt(DecodeReader& r, std::variant<Ts...>& out, uint64_t index,
                        std::index_sequence<I...>) {
    bool ok = false;
    ((index == I ? (ok = DecodeOne<I>(r, out), true) : false) || ...);
    return ok;
  }
  template <size_t I>
  static bool DecodeOne(DecodeReader& r, std::variant<Ts...>& out) {
    using Alt = std::variant_alternative_t<I, std::variant<Ts...>>;
    if (out.index() != I) out.template emplace<I>();
    return Codec<Alt>::Decode(r, std::get<I>(out));
  }
};

// ------------------------------------------------------------------ absl types

template <>
struct Codec<absl::Duration> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const absl::Duration& d);
  static bool Decode(DecodeReader& r, absl::Duration& out);
};

template <>
struct Codec<absl::Time> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const absl::Time& t);
  static bool Decode(DecodeReader& r, absl::Time& out);
};

// Code, message and payloads.
template <>
struct Codec<absl::Status> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 3;
  static void Encode(EncodeBuffer& b, const absl::Status& s);
  static bool Decode(DecodeReader& r, absl::Status& out);
};

// ------------------------------------------------------------------ descriptors

// An fd attachment: the encoder borrows the descriptor (keep it open until the frame is sent);
// the decoder owns a new descriptor for the same open file. Types that contain one can travel
// only over AF_UNIX sockets (kCarriesFds).
template <>
struct Codec<UniqueFd> {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const UniqueFd& fd) { b.PutVarint(b.AttachFd(fd.get())); }
  static bool Decode(DecodeReader& r, UniqueFd& out) {
    uint64_t index;
    return r.ReadVarint(&index) && r.TakeFd(index, &out);
  }
};

// ------------------------------------------------------------------ functions

// A function pointer travels as a code reference (base/code_ref.h): the build id of the object
// that contains it and its offset there, resolved against the receiver's own loaded objects.
// Only meaningful between processes running the same binaries (spawn, fork server, pool
// workers); decoding yields an address inside an executable segment or fails. Decode only
// from trusted channels: the receiver may call what it decodes.
namespace serialize_internal {
void EncodeCodeAddress(EncodeBuffer& b, const void* addr);
bool DecodeCodeAddress(DecodeReader& r, const void** addr);
}  // namespace serialize_internal

template <typename R, typename... A>
struct Codec<R (*)(A...)> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, R (*const& fn)(A...)) {
    serialize_internal::EncodeCodeAddress(b, reinterpret_cast<const void*>(fn));
  }
  static bool Decode(DecodeReader& r, R (*&out)(A...)) {
    const void* addr = nullptr;
    if (!serialize_internal::DecodeCodeAddress(r, &addr)) return false;
    out = reinterpret_cast<R (*)(A...)>(const_cast<void*>(addr));
    return true;
  }
};

// ------------------------------------------------------------------ user types

template <typename T>
  requires serialize_internal::HasFieldList<T>
struct Codec<T> {
  using Fields = decltype(MprocCodecFields(static_cast<const T*>(nullptr)));
  template <typename F>
  struct MemberType;
  template <typename C, typename M>
  struct MemberType<M C::*> {
    using type = M;
  };
  template <size_t... I>
  static constexpr bool AnyFds(std::index_sequence<I...>) {
    return (false || ... ||
            mproc::kTypeCarriesFds<typename MemberType<std::tuple_element_t<I, Fields>>::type>);
  }
  template <size_t... I>
  static constexpr size_t MinSize(std::index_sequence<I...>) {
    return (size_t{0} + ... +
            kMinEncodedSize<typename MemberType<std::tuple_element_t<I, Fields>>::type>);
  }
  static constexpr auto kSeq = std::make_index_sequence<std::tuple_size_v<Fields>>{};
  static constexpr bool kCarriesFds = AnyFds(kSeq);
  static constexpr size_t kMinSize = MinSize(kSeq);

  static void Encode(EncodeBuffer& b, const T& v) {
    std::apply(
        [&](auto... member) {
          (Codec<std::decay_t<decltype(v.*member)>>::Encode(b, v.*member), ...);
        },
        MprocCodecFields(static_cast<const T*>(nullptr)));
  }
  static bool Decode(DecodeReader& r, T& out) {
    return std::apply(
        [&](auto... member) {
          return (Codec<std::decay_t<decltype(out.*member)>>::Decode(r, out.*member) && ...);
        },
        MprocCodecFields(static_cast<const T*>(nullptr)));
  }
};

template <typename T>
  requires(serialize_internal::HasTrivialOptIn<T> && !serialize_internal::HasFieldList<T>)
struct Codec<T> {
  static_assert(serialize_internal::EveryBytePatternValid<T>(),
                "MPROC_CODEC_TRIVIAL copies bytes as they come, so every byte pattern must be a "
                "value: it refuses bool, enum and pointer members (hostile bytes would make "
                "invalid values), C arrays (use std::array) and non-aggregates; use "
                "MPROC_CODEC_FIELDS, which checks each member");
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = sizeof(T);
  static void Encode(EncodeBuffer& b, const T& v) { b.Append(&v, sizeof(T)); }
  static bool Decode(DecodeReader& r, T& out) { return r.Read(&out, sizeof(T)); }
};

// ------------------------------------------------------------------ entry points

// Appends the encoding of `v` to `buf` (and its fds to buf.fds()).
template <typename T>
void Encode(const T& v, EncodeBuffer& buf) {
  Codec<T>::Encode(buf, v);
}

namespace serialize_internal {
template <typename T>
absl::Status FinishDecode(DecodeReader& r, T& out) {
  if (!Codec<T>::Decode(r, out)) [[unlikely]] return r.status();
  if (r.remaining() != 0) [[unlikely]] {
    r.Fail("trailing bytes after the value");
    return r.status();
  }
  if (r.fd_count() != 0 && r.unclaimed_fds() != 0) [[unlikely]] {
    r.Fail("the frame carried fds the value did not claim");
    return r.status();
  }
  return absl::OkStatus();
}
}  // namespace serialize_internal

// Decodes `bytes` (all of them) into `out`, reusing its storage; `fds` are the descriptors
// that arrived with the bytes (the value must claim every one). INVALID_ARGUMENT on malformed
// input or trailing bytes; on error `out` holds a partial value.
template <typename T>
absl::Status DecodeInto(std::span<const std::byte> bytes, T& out) {
  DecodeReader r(bytes);
  return serialize_internal::FinishDecode(r, out);
}
template <typename T>
absl::Status DecodeInto(std::span<const std::byte> bytes, T& out, std::vector<UniqueFd>&& fds) {
  DecodeReader r(bytes, std::move(fds));
  return serialize_internal::FinishDecode(r, out);
}

// Decodes into a fresh value. (For absl::Status use DecodeInto.)
template <typename T>
[[nodiscard]] absl::StatusOr<T> Decode(std::span<const std::byte> bytes) {
  static_assert(!std::is_same_v<T, absl::Status>,
                "absl::StatusOr<absl::Status> cannot tell a decoding error from a decoded error "
                "status: use DecodeInto(bytes, status) for absl::Status");
  T out{};
  absl::Status s = DecodeInto(bytes, out);
  if (!s.ok()) [[unlikely]] return s;
  return out;
}
template <typename T>
[[nodiscard]]
absl::StatusOr<T> Decode(std::span<const std::byte> bytes, std::vector<UniqueFd>&& fds) {
  static_assert(!std::is_same_v<T, absl::Status>, "use DecodeInto for absl::Status");
  T out{};
  absl::Status s = DecodeInto(bytes, out, std::move(fds));
  if (!s.ok()) return s;
  return out;
}

inline std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace mproc

// ------------------------------------------------------------------ opt-in macros

#define MPROC_CODEC_EXPAND_(x) x
#define MPROC_CODEC_MEMBER_(T, f) &T::f
#define MPROC_CODEC_ENUMERATOR_(T, v) T::v
#define MPROC_CODEC_M1_(T, a) MPROC_CODEC_MEMBER_(T, a)
#define MPROC_CODEC_M2_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M1_(T, __VA_ARGS__))
#define MPROC_CODEC_M3_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M2_(T, __VA_ARGS__))
#define MPROC_CODEC_M4_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M3_(T, __VA_ARGS__))
#define MPROC_CODEC_M5_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M4_(T, __VA_ARGS__))
#define MPROC_CODEC_M6_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M5_(T, __VA_ARGS__))
#define MPROC_CODEC_M7_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M6_(T, __VA_ARGS__))
#define MPROC_CODEC_M8_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M7_(T, __VA_ARGS__))
#define MPROC_CODEC_M9_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M8_(T, __VA_ARGS__))
#define MPROC_CODEC_M10_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M9_(T, __VA_ARGS__))
#define MPROC_CODEC_M11_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M10_(T, __VA_ARGS__))
#define MPROC_CODEC_M12_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M11_(T, __VA_ARGS__))
#define MPROC_CODEC_M13_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M12_(T, __VA_ARGS__))
#define MPROC_CODEC_M14_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M13_(T, __VA_ARGS__))
#define MPROC_CODEC_M15_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M14_(T, __VA_ARGS__))
#define MPROC_CODEC_M16_(T, a, ...) MPROC_CODEC_MEMBER_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_M15_(T, __VA_ARGS__))
#define MPROC_CODEC_PICK_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, N, ...) N
#define MPROC_CODEC_MEMBERS_(T, ...)                                                           \
  MPROC_CODEC_EXPAND_(MPROC_CODEC_PICK_(__VA_ARGS__, MPROC_CODEC_M16_, MPROC_CODEC_M15_,      \
                                        MPROC_CODEC_M14_, MPROC_CODEC_M13_, MPROC_CODEC_M12_, \
                                        MPROC_CODEC_M11_, MPROC_CODEC_M10_, MPROC_CODEC_M9_,  \
                                        MPROC_CODEC_M8_, MPROC_CODEC_M7_, MPROC_CODEC_M6_,    \
                                        MPROC_CODEC_M5_, MPROC_CODEC_M4_, MPROC_CODEC_M3_,    \
                                        MPROC_CODEC_M2_, MPROC_CODEC_M1_)(T, __VA_ARGS__))

// The enumerators of an enum, for MPROC_CODEC_ENUM (up to 16): MEMBER_ applied, then
// re-spelled. Each MPROC_CODEC_Mn_ names MPROC_CODEC_MEMBER_; the enum form substitutes it.
#define MPROC_CODEC_E1_(T, a) MPROC_CODEC_ENUMERATOR_(T, a)
#define MPROC_CODEC_E2_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E1_(T, __VA_ARGS__))
#define MPROC_CODEC_E3_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E2_(T, __VA_ARGS__))
#define MPROC_CODEC_E4_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E3_(T, __VA_ARGS__))
#define MPROC_CODEC_E5_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E4_(T, __VA_ARGS__))
#define MPROC_CODEC_E6_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E5_(T, __VA_ARGS__))
#define MPROC_CODEC_E7_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E6_(T, __VA_ARGS__))
#define MPROC_CODEC_E8_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E7_(T, __VA_ARGS__))
#define MPROC_CODEC_E9_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E8_(T, __VA_ARGS__))
#define MPROC_CODEC_E10_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E9_(T, __VA_ARGS__))
#define MPROC_CODEC_E11_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E10_(T, __VA_ARGS__))
#define MPROC_CODEC_E12_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E11_(T, __VA_ARGS__))
#define MPROC_CODEC_E13_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E12_(T, __VA_ARGS__))
#define MPROC_CODEC_E14_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E13_(T, __VA_ARGS__))
#define MPROC_CODEC_E15_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E14_(T, __VA_ARGS__))
#define MPROC_CODEC_E16_(T, a, ...) MPROC_CODEC_ENUMERATOR_(T, a), MPROC_CODEC_EXPAND_(MPROC_CODEC_E15_(T, __VA_ARGS__))
#define MPROC_CODEC_ENUMERATORS_(T, ...)                                                       \
  MPROC_CODEC_EXPAND_(MPROC_CODEC_PICK_(__VA_ARGS__, MPROC_CODEC_E16_, MPROC_CODEC_E15_,      \
                                        MPROC_CODEC_E14_, MPROC_CODEC_E13_, MPROC_CODEC_E12_, \
                                        MPROC_CODEC_E11_, MPROC_CODEC_E10_, MPROC_CODEC_E9_,  \
                                        MPROC_CODEC_E8_, MPROC_CODEC_E7_, MPROC_CODEC_E6_,    \
                                        MPROC_CODEC_E5_, MPROC_CODEC_E4_, MPROC_CODEC_E3_,    \
                                        MPROC_CODEC_E2_, MPROC_CODEC_E1_)(T, __VA_ARGS__))

// The codec of an enum: every enumerator it may take (up to 16), at namespace scope in the
// enum's namespace. Decoding refuses any other value.
//   enum class Color : uint16_t { kRed = 1, kBlue = 700 };
//   MPROC_CODEC_ENUM(Color, kRed, kBlue)
#define MPROC_CODEC_ENUM(Type, ...)                                                      \
  [[maybe_unused]] inline constexpr auto MprocCodecEnumValues(const Type*) {             \
    return ::std::array<Type, ::std::tuple_size_v<decltype(::std::make_tuple(            \
                                  MPROC_CODEC_ENUMERATORS_(Type, __VA_ARGS__)))>>{       \
        MPROC_CODEC_ENUMERATORS_(Type, __VA_ARGS__)};                                    \
  }

// Field-by-field codec for Type (up to 16 fields), at namespace scope in Type's namespace.
#define MPROC_CODEC_FIELDS(Type, ...)                                   \
  [[maybe_unused]] inline constexpr auto MprocCodecFields(const Type*) { \
    return ::std::make_tuple(MPROC_CODEC_MEMBERS_(Type, __VA_ARGS__));   \
  }

// The same inside the class body, so private members can be listed.
#define MPROC_CODEC_FRIEND_FIELDS(Type, ...)                          \
  friend constexpr auto MprocCodecFields(const Type*) {               \
    return ::std::make_tuple(MPROC_CODEC_MEMBERS_(Type, __VA_ARGS__)); \
  }

// One-memcpy codec for a trivially copyable Type with no padding bytes (so no stale memory
// leaks into another process). A type with padding is refused at compile time.
#define MPROC_CODEC_TRIVIAL(Type)                                                         \
  [[maybe_unused]] inline constexpr bool MprocCodecTrivial(const Type*) {                  \
    static_assert(::std::is_trivially_copyable_v<Type>,                                    \
                  "MPROC_CODEC_TRIVIAL needs a trivially copyable type");                  \
    static_assert(::std::has_unique_object_representations_v<Type>,                        \
                  "MPROC_CODEC_TRIVIAL refuses a type with padding bytes or floating-point " \
                  "members (their bytes could leak stale memory or not compare equal); use " \
                  "MPROC_CODEC_FIELDS instead");                                           \
    return true;                                                                           \
  }

#endif  // MPROC_SERIALIZE_CODEC_H_
