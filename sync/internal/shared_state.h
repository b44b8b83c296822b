// sync/internal/shared_state.h — a State placed in its own sealed memfd segment, shared by
// every copy of a handle (and by every process the handle reaches).
//
// The kernel keeps the region alive while any process maps it, so an object lives exactly as
// long as some handle to it does, in any process — no cross-process reference counting.
#ifndef MPROC_SYNC_INTERNAL_SHARED_STATE_H_
#define MPROC_SYNC_INTERNAL_SHARED_STATE_H_

#include <memory>
#include <new>
#include <string_view>
#include <type_traits>

#include "absl/status/statusor.h"
#include "serialize/codec.h"
#include "shm/segment.h"

namespace mproc::sync_internal {

struct Region {
  Segment segment;
  Mapping mapping;
};

// Creates a zeroed region of at least `size` bytes.
absl::StatusOr<std::shared_ptr<Region>> CreateRegion(size_t size, std::string_view name);

// Builds a T in a fresh region; T must be a standard-layout type valid in shared memory.
template <typename T, typename... Args>
absl::StatusOr<std::pair<std::shared_ptr<Region>, T*>> CreateShared(std::string_view name,
                                                                   Args&&... args) {
  static_assert(std::is_standard_layout_v<T>, "shared state must be standard-layout");
  absl::StatusOr<std::shared_ptr<Region>> r = CreateRegion(sizeof(T), name);
  if (!r.ok()) return r.status();
  T* obj = new ((*r)->mapping.data()) T(std::forward<Args>(args)...);
  return std::make_pair(*std::move(r), obj);
}

// Codec support for handles (DESIGN.md, Handles): a handle travels as its region's descriptor
// (an fd attachment) and the offset of its state in the region. Decoding maps the region and
// checks that `need` bytes at the offset fit and are aligned to `align`. An empty handle
// (default-constructed) travels as a single 0 byte and decodes to an empty handle.
void EncodeRegionRef(EncodeBuffer& b, const std::shared_ptr<Region>& region, const void* state);
bool DecodeRegionRef(DecodeReader& r, size_t need, size_t align, std::shared_ptr<Region>* region,
                     char** state);

template <typename H>
struct ValueCodec;  // sync/value.h

// The codec of a handle that is a region plus one State* (`region_` and `s_` members, and a
// (region, state) constructor); the handle befriends it.
template <typename Handle, typename State>
struct SimpleHandleCodec {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const Handle& h) { EncodeRegionRef(b, h.region_, h.s_); }
  static bool Decode(DecodeReader& r, Handle& out) {
    std::shared_ptr<Region> region;
    char* state = nullptr;
    if (!DecodeRegionRef(r, sizeof(State), alignof(State), &region, &state)) return false;
    out = region ? Handle(std::move(region), reinterpret_cast<State*>(state)) : Handle();
    return true;
  }
};

}  // namespace mproc::sync_internal

#endif  // MPROC_SYNC_INTERNAL_SHARED_STATE_H_
