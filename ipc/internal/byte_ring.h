// ipc/internal/byte_ring.h — the byte ring under a Queue's producer rings and a RingLink's
// two directions (a duplex Pipe's, and a pool worker's channel).
//
// A ring is kSize bytes of shared memory indexed by monotonic byte positions: position p is
// byte p % kSize, the writer publishes a `tail` and readers move a `head` (each user keeps
// those words, and its own rules for who writes them, in its own layout). What is published
// is a sequence of records, each a header of the user's and the bytes, padded to 8.
//
// The memory is shared with processes trusted no more than a socket peer, which can write any
// word of it. So every copy here wraps at the ring's end, whatever the position (an
// unaligned or garbled head or tail included): nothing reads or writes outside the ring. What
// is left to each user is to check that a header it read describes a record that fits in what
// was published (Plausible, Fits), and to say what it does when it does not.

#ifndef MPROC_IPC_INTERNAL_BYTE_RING_H_
#define MPROC_IPC_INTERNAL_BYTE_RING_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

namespace mproc::ipc_internal {

// The bytes a record of `len` payload bytes takes after a `header`-byte header, padded to 8.
constexpr uint64_t RecordBytes(uint64_t len, uint64_t header) {
  return header + (len + 7) / 8 * 8;
}

// A view of one ring; copyable, owns nothing. kSize is a power of two (positions wrap with a
// mask, not a division, on the paths every item takes).
template <uint64_t kSize>
class ByteRing {
  static_assert(kSize >= 64 && (kSize & (kSize - 1)) == 0, "a ring is a power of two bytes");

 public:
  explicit ByteRing(std::byte* data) : data_(data) {}

  // Copies `n` bytes (n <= kSize) in at position `pos`, wrapping at the end.
  void CopyIn(uint64_t pos, const void* src, uint64_t n) const {
    const uint64_t off = pos % kSize;
    const uint64_t first = std::min(n, kSize - off);
    if (first > 0) std::memcpy(data_ + off, src, first);
    if (n > first) std::memcpy(data_, static_cast<const std::byte*>(src) + first, n - first);
  }
  void CopyIn(uint64_t pos, std::span<const std::byte> src) const {
    CopyIn(pos, src.data(), src.size());
  }
  // Copies `n` bytes (n <= kSize) out from position `pos`, wrapping at the end.
  void CopyOut(uint64_t pos, void* dst, uint64_t n) const {
    const uint64_t off = pos % kSize;
    const uint64_t first = std::min(n, kSize - off);
    if (first > 0) std::memcpy(dst, data_ + off, first);
    if (n > first) std::memcpy(static_cast<std::byte*>(dst) + first, data_, n - first);
  }
  // Appends the `n` bytes (n <= kSize) at `pos` to `out`.
  void AppendTo(uint64_t pos, uint64_t n, std::string* out) const {
    const uint64_t off = pos % kSize;
    const uint64_t first = std::min(n, kSize - off);
    const char* base = reinterpret_cast<const char*>(data_);
    out->append(base + off, first);
    if (n > first) out->append(base, n - first);
  }
  // The `n` bytes at `pos` in place, or an empty span when they wrap around the end (or n is 0).
  std::span<const std::byte> Contiguous(uint64_t pos, uint64_t n) const {
    const uint64_t off = pos % kSize;
    if (n == 0 || n > kSize - off) return {};
    return {data_ + off, n};
  }

  // Whether [head, tail) can be what is published: not negative, not more than the ring.
  static constexpr bool Plausible(uint64_t head, uint64_t tail) {
    return tail >= head && tail - head <= kSize;
  }
  // Whether a record of `len` bytes after a `header`-byte header lies within [head, tail)
  // (which Plausible accepted).
  static constexpr bool Fits(uint64_t len, uint64_t header, uint64_t head, uint64_t tail) {
    return RecordBytes(len, header) <= tail - head;
  }

 private:
  std::byte* data_;
};

}  // namespace mproc::ipc_internal

#endif  // MPROC_IPC_INTERNAL_BYTE_RING_H_
