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

}  // namespace mproc::sync_internal

#endif  // MPROC_SYNC_INTERNAL_SHARED_STATE_H_
