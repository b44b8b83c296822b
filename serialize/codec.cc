#include "serialize/codec.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "base/code_ref.h"

namespace mproc {

// Durations: a tag byte (0 finite, 1 +inf, 2 -inf), then whole seconds (int64) and the
// remainder in quarter-nanosecond ticks (uint32) — absl's own resolution, so nothing is lost.
void Codec<absl::Duration>::Encode(EncodeBuffer& b, const absl::Duration& d) {
  uint8_t tag = 0;
  if (d == absl::InfiniteDuration()) tag = 1;
  if (d == -absl::InfiniteDuration()) tag = 2;
  b.Append(&tag, 1);
  if (tag) return;
  absl::Duration rem;
  int64_t secs = absl::IDivDuration(d, absl::Seconds(1), &rem);
  if (rem < absl::ZeroDuration()) {  // keep the remainder non-negative
    secs -= 1;
    rem += absl::Seconds(1);
  }
  absl::Duration unused;
  uint32_t ticks = static_cast<uint32_t>(absl::IDivDuration(rem, absl::Nanoseconds(1) / 4, &unused));
  b.Append(&secs, sizeof(secs));
  b.Append(&ticks, sizeof(ticks));
}

bool Codec<absl::Duration>::Decode(DecodeReader& r, absl::Duration& out) {
  uint8_t tag;
  if (!r.Read(&tag, 1)) return false;
  if (tag == 1) {
    out = absl::InfiniteDuration();
    return true;
  }
  if (tag == 2) {
    out = -absl::InfiniteDuration();
    return true;
  }
  if (tag != 0) return r.Fail("bad duration tag");
  int64_t secs;
  uint32_t ticks;
  if (!r.Read(&secs, sizeof(secs)) || !r.Read(&ticks, sizeof(ticks))) return false;
  if (ticks >= 4'000'000'000u) return r.Fail("duration sub-second ticks out of range");
  out = absl::Seconds(secs) + (absl::Nanoseconds(1) / 4) * static_cast<int64_t>(ticks);
  return true;
}

void Codec<absl::Time>::Encode(EncodeBuffer& b, const absl::Time& t) {
  if (t == absl::InfiniteFuture()) {
    Codec<absl::Duration>::Encode(b, absl::InfiniteDuration());
  } else if (t == absl::InfinitePast()) {
    Codec<absl::Duration>::Encode(b, -absl::InfiniteDuration());
  } else {
    Codec<absl::Duration>::Encode(b, t - absl::UnixEpoch());
  }
}

bool Codec<absl::Time>::Decode(DecodeReader& r, absl::Time& out) {
  absl::Duration d;
  if (!Codec<absl::Duration>::Decode(r, d)) return false;
  if (d == absl::InfiniteDuration()) {
    out = absl::InfiniteFuture();
  } else if (d == -absl::InfiniteDuration()) {
    out = absl::InfinitePast();
  } else {
    out = absl::UnixEpoch() + d;
  }
  return true;
}

void Codec<absl::Status>::Encode(EncodeBuffer& b, const absl::Status& s) {
  b.PutVarint(static_cast<uint64_t>(s.code()));
  const absl::string_view msg = s.message();
  b.PutVarint(msg.size());
  b.Append(msg.data(), msg.size());
  std::vector<std::pair<std::string, std::string>> payloads;
  s.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    payloads.emplace_back(std::string(url), std::string(payload));
  });
  std::sort(payloads.begin(), payloads.end());
  b.PutVarint(payloads.size());
  for (const auto& [url, bytes] : payloads) {
    Codec<std::string>::Encode(b, url);
    Codec<std::string>::Encode(b, bytes);
  }
}

bool Codec<absl::Status>::Decode(DecodeReader& r, absl::Status& out) {
  uint64_t code;
  std::string msg;
  if (!r.ReadVarint(&code)) return false;
  if (code > static_cast<uint64_t>(absl::StatusCode::kUnauthenticated)) {
    return r.Fail("unknown status code");
  }
  if (!Codec<std::string>::Decode(r, msg)) return false;
  uint64_t n;
  if (!r.ReadVarint(&n) || !serialize_internal::CheckCount<std::string>(r, n)) return false;
  absl::Status s(static_cast<absl::StatusCode>(code), msg);
  for (uint64_t i = 0; i < n; ++i) {
    std::string url, bytes;
    if (!Codec<std::string>::Decode(r, url) || !Codec<std::string>::Decode(r, bytes)) {
      return false;
    }
    if (code != 0) s.SetPayload(url, absl::Cord(bytes));
  }
  out = std::move(s);
  return true;
}

namespace serialize_internal {

// Tag byte: 0 null, 1 code reference (object, offset), 2 not encodable (the reason).
void EncodeCodeAddress(EncodeBuffer& b, const void* addr) {
  uint8_t tag = 0;
  if (addr == nullptr) {
    b.Append(&tag, 1);
    return;
  }
  absl::StatusOr<CodeRef> ref = CodeRefFor(addr);
  tag = ref.ok() ? 1 : 2;
  b.Append(&tag, 1);
  if (ref.ok()) {
    Codec<std::string>::Encode(b, ref->object);
    b.PutVarint(ref->offset);
  } else {
    Codec<std::string>::Encode(b, std::string(ref.status().message()));
  }
}

bool DecodeCodeAddress(DecodeReader& r, const void** addr) {
  uint8_t tag;
  if (!r.Read(&tag, 1)) return false;
  if (tag == 0) {
    *addr = nullptr;
    return true;
  }
  if (tag == 2) {
    std::string why;
    if (!Codec<std::string>::Decode(r, why)) return false;
    return r.Fail(absl::StrCat("the sender could not encode a function pointer: ", why));
  }
  if (tag != 1) return r.Fail("bad function pointer tag");
  CodeRef ref;
  if (!Codec<std::string>::Decode(r, ref.object) || !r.ReadVarint(&ref.offset)) return false;
  absl::StatusOr<const void*> resolved = ResolveCodeRef(ref);
  if (!resolved.ok()) return r.Fail(std::string(resolved.status().message()));
  *addr = *resolved;
  return true;
}

}  // namespace serialize_internal
}  // namespace mproc
