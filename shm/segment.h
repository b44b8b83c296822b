// shm/segment.h — anonymous shared memory: a sealed memfd (the region) and its mapping.
//
// The region (an fd, a size, seals) and the mapping (an address and length, unmapped in the
// destructor) are separate types, as Chromium separates PlatformSharedMemoryRegion from its
// mappings. A region is shared with children by its descriptor: inherited under fork, sent
// with SCM_RIGHTS under spawn/forkserver (Codec<Segment> attaches it).
//
//   MPROC_ASSIGN_OR_RETURN(Segment seg, Segment::Create(1 << 20));
//   MPROC_ASSIGN_OR_RETURN(Mapping m, seg.Map());
//   std::memcpy(m.data(), src, n);
//
// Sealing: every region is created with MFD_CLOEXEC | MFD_ALLOW_SEALING (and MFD_NOEXEC_SEAL
// where the kernel has it) and sealed with F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL after it
// is sized, so no peer can truncate it and SIGBUS a reader.
//
// Memory exhaustion: tmpfs allocates pages on first touch, so a memfd larger than the memory
// left shows up as SIGBUS when a page is first written, not as an error from ftruncate. The
// default (Reserve::kLazy, as CPython's SharedMemory) allocates pages as they are touched —
// creation costs microseconds whatever the size, and exhaustion is a SIGBUS. Reserve::kEager
// reserves every page with fallocate() at creation, which turns exhaustion into a clear
// RESOURCE_EXHAUSTED there, at the cost of allocating and zeroing the whole region up front
// (about 0.5 ms per MiB here; see the report's mproc.shm rows).
//
// Thread-safety: Segment and Mapping are values; share them across threads read-only.
// Process-safety: a peer that dies leaves the region intact; it is freed when the last fd and
// mapping to it are gone.

#ifndef MPROC_SHM_SEGMENT_H_
#define MPROC_SHM_SEGMENT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "serialize/codec.h"

namespace mproc {

class Mapping {
 public:
  Mapping() = default;
  Mapping(Mapping&& o) noexcept : addr_(o.addr_), size_(o.size_) {
    o.addr_ = nullptr;
    o.size_ = 0;
  }
  Mapping& operator=(Mapping&& o) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { Reset(); }

  // Takes ownership of a region returned by mmap(); munmap()s it on destruction.
  static Mapping Adopt(void* addr, size_t size) { return Mapping(addr, size); }

  // The mapped address and length (null and 0 when empty); ok() when something is mapped.
  void* data() const { return addr_; }
  size_t size() const { return size_; }
  std::span<std::byte> bytes() const { return {static_cast<std::byte*>(addr_), size_}; }
  bool ok() const { return addr_ != nullptr; }
  // Mapping::Reset(): munmap()s now and leaves the Mapping empty; nothing when already empty.
  // Never fails. Not for concurrent use with other calls on this Mapping.
  void Reset();

 private:
  friend class Segment;
  Mapping(void* addr, size_t size) : addr_(addr), size_(size) {}
  void* addr_ = nullptr;
  size_t size_ = 0;
};

class Segment {
 public:
  enum class Reserve { kEager, kLazy };

  // Segment::Create(size, name, reserve)
  //
  // Creates a sealed anonymous region of `size` bytes (> 0), zero-filled. `name` is only a
  // label shown in /proc/<pid>/maps (cut at 200 bytes). Never blocks, except that kEager
  // allocates every page before it returns. Errors: INVALID_ARGUMENT for size 0; with
  // Reserve::kEager, RESOURCE_EXHAUSTED when the memory is not there; other failed calls
  // (memfd_create, ftruncate, fallocate, sealing) by errno (base/status.h), e.g.
  // RESOURCE_EXHAUSTED when out of descriptors. Thread-safe.
  [[nodiscard]] static absl::StatusOr<Segment> Create(size_t size, std::string_view name = "mproc",
                                        Reserve reserve = Reserve::kLazy);

  // Segment::FromFd(fd)
  //
  // Adopts a descriptor received from another process; the size comes from fstat. Never
  // blocks. Errors: INVALID_ARGUMENT when the file has size 0 or is not sealed against
  // shrinking (not a Segment's memfd); fstat's errno otherwise (FAILED_PRECONDITION for a
  // descriptor that is not open). On an error `fd` is closed. Thread-safe.
  [[nodiscard]] static absl::StatusOr<Segment> FromFd(UniqueFd fd);

  Segment() = default;
  Segment(Segment&&) noexcept = default;
  Segment& operator=(Segment&&) noexcept = default;

  // Segment::Duplicate()
  //
  // Another descriptor for the same region (F_DUPFD_CLOEXEC). Never blocks. Errors by errno:
  // RESOURCE_EXHAUSTED when out of descriptors, FAILED_PRECONDITION on an empty Segment.
  // Thread-safe (const).
  [[nodiscard]] absl::StatusOr<Segment> Duplicate() const;

  // Segment::Map()
  //
  // Maps the whole region read-write, shared; each call is a new mapping of the same memory.
  // Never blocks. Errors: FAILED_PRECONDITION on an empty Segment; mmap's errno otherwise
  // (RESOURCE_EXHAUSTED when out of address space or mappings). Thread-safe (const).
  [[nodiscard]] absl::StatusOr<Mapping> Map() const;

  // The descriptor (-1 when empty; still owned by the Segment), the size, and whether it holds
  // a region.
  int fd() const { return fd_.get(); }
  size_t size() const { return size_; }
  bool ok() const { return fd_.ok(); }

 private:
  Segment(UniqueFd fd, size_t size) : fd_(std::move(fd)), size_(size) {}
  UniqueFd fd_;
  size_t size_ = 0;
};

// A Segment travels as its descriptor; the receiver checks it is a sealed region (FromFd).
template <>
struct Codec<Segment> {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const Segment& s) {
    uint8_t tag = s.ok() ? 1 : 0;
    b.Append(&tag, 1);
    if (s.ok()) b.PutVarint(b.AttachFd(s.fd()));
  }
  static bool Decode(DecodeReader& r, Segment& out) {
    uint8_t tag;
    if (!r.Read(&tag, 1)) return false;
    if (tag == 0) {
      out = Segment();
      return true;
    }
    uint64_t index;
    UniqueFd fd;
    if (tag != 1 || !r.ReadVarint(&index) || !r.TakeFd(index, &fd)) {
      return r.ok() ? r.Fail("bad Segment tag") : false;
    }
    absl::StatusOr<Segment> s = Segment::FromFd(std::move(fd));
    if (!s.ok()) return r.Fail(std::string(s.status().message()));
    out = *std::move(s);
    return true;
  }
};

}  // namespace mproc

#endif  // MPROC_SHM_SEGMENT_H_
