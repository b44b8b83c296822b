// serialize/proto_codec.h — Codec<T> for any protobuf message (length-prefixed wire format).
//
// Protobuf carries control messages (the envelope, layers' own .proto messages); per-item
// traffic uses the native codecs. Decoding into an existing message reuses its storage.

#ifndef MPROC_SERIALIZE_PROTO_CODEC_H_
#define MPROC_SERIALIZE_PROTO_CODEC_H_

#include <string>
#include <type_traits>

#include "google/protobuf/message_lite.h"
#include "serialize/codec.h"

namespace mproc {

template <typename T>
  requires std::is_base_of_v<google::protobuf::MessageLite, T>
struct Codec<T> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const T& m) {
    size_t n = m.ByteSizeLong();
    b.PutVarint(n);
    m.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(b.Extend(n)));
  }
  static bool Decode(DecodeReader& r, T& out) {
    uint64_t n;
    if (!r.ReadVarint(&n)) return false;
    if (n > r.remaining()) return r.Fail("message length exceeds the remaining input");
    const std::byte* p = r.Take(n);
    if (!out.ParseFromArray(p, static_cast<int>(n))) return r.Fail("malformed protobuf message");
    return true;
  }
};

}  // namespace mproc

#endif  // MPROC_SERIALIZE_PROTO_CODEC_H_
