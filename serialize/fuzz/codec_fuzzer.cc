// libFuzzer target: codecs of nested containers (and RemoteError) on arbitrary bytes. Every
// input decodes to a value or INVALID_ARGUMENT; a decoded value re-encodes to bytes that decode
// to an equal value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "serialize/codec.h"
#include "serialize/remote_error.h"

namespace {

using Nested = std::tuple<std::map<std::string, std::vector<int32_t>>,
                          std::vector<std::optional<std::string>>,
                          std::variant<std::monostate, int64_t, std::vector<double>, std::set<uint16_t>>,
                          std::unordered_map<int, std::pair<bool, std::string>>, absl::Duration>;

template <typename T>
void Check(std::span<const std::byte> bytes) {
  absl::StatusOr<T> v = mproc::Decode<T>(bytes);
  if (!v.ok()) {
    if (v.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return;
  }
  mproc::EncodeBuffer b;
  mproc::Encode(*v, b);
  absl::StatusOr<T> again = mproc::Decode<T>(b.bytes());
  if (!again.ok()) std::abort();
  mproc::EncodeBuffer b2;
  mproc::Encode(*again, b2);
  if (b.view() != b2.view()) std::abort();  // encoding is deterministic
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  Check<Nested>(bytes);
  Check<std::vector<std::string>>(bytes);
  Check<mproc::RemoteError>(bytes);
  absl::Status s;
  (void)mproc::DecodeInto(bytes, s);
  (void)mproc::Decode<std::span<const int64_t>>(bytes);
  return 0;
}
