// shm/shared_bytes.h — large payloads handed between processes without copying them.
//
// A SharedBytesWriter is memory this process fills in place; Freeze() turns it into a
// SharedBytes, a read-only buffer that travels through every carrier that takes a value
// (Queue, Pipe/Connection, Process arguments, Pool and executor arguments and results) as one
// descriptor and a length: the payload is never copied, whatever its size. The receiver reads
// it where the sender wrote it.
//
//   MPROC_ASSIGN_OR_RETURN(SharedBytesWriter w, SharedBytesWriter::Allocate(64 << 20));
//   FillFrame(w.bytes());                       // write in place
//   MPROC_ASSIGN_OR_RETURN(SharedBytes frame, std::move(w).Freeze());
//   MPROC_RETURN_IF_ERROR(queue.Put(frame));    // O(1): a descriptor and a length
//   ...
//   MPROC_ASSIGN_OR_RETURN(SharedBytes got, queue.Get());     // in another process
//   MPROC_ASSIGN_OR_RETURN(std::span<const float> v, got.As<float>());  // a view, in place
//
// Mechanism. Each buffer is a memfd sealed against shrinking, growing and writing
// (F_SEAL_FUTURE_WRITE) as soon as it is made. The sealing is what makes the handed-over
// memory read-only for everyone else: no receiver can map it writable or write() it, even by
// reopening it. Only the allocating process keeps the one writable mapping, made before the
// seal, and it writes through it only while the buffer is a SharedBytesWriter — Freeze()
// consumes the writer. We chose a future-write seal over F_SEAL_WRITE and over copy-on-write
// because F_SEAL_WRITE needs every writable mapping gone first. That means a new memfd and
// fresh pages for every buffer. Fresh pages cost about 3.5 µs per 4 KiB page here: 51 ms to
// fill a fresh 64 MiB buffer, against 3 ms to refill a recycled one. Copy-on-write would copy
// the pages the sender writes next.
//
// Recycling, and freeing when a holder dies. The allocating process keeps buffers that every
// holder has dropped in a pool and hands them out again, so a steady stream of frames reuses
// memory that is already allocated and mapped. Whether anyone still holds a buffer is kept by
// the kernel: Freeze() opens a second, read-only file description of the memfd and takes an
// open-file-description read lock on it; that description is what travels (SCM_RIGHTS shares
// it), and the lock lasts while any process — or any message in flight — still has it open or
// mapped. A holder that is SIGKILLed closes it with its other descriptors, so its buffers
// come back to the pool; nothing lives in /dev/shm, and the memory goes with the last holder
// and the last mapping (the sender's pool, a receiver's cache) once they let it go. The pool
// keeps at most SetPoolLimit() bytes of idle buffers (counted as the memory they hold: the
// pages written, not the capacity).
//
// Receiving. A received buffer is mapped read-only once per memfd and the mapping is kept in a
// per-process cache (up to SetCacheLimit() bytes of the memory those buffers hold), so when
// the sender recycles a buffer the receiver reads it with no page faults at all; the first
// receipt of a memfd pays the page faults of a fresh mapping (mproc.shared_bytes.first_read,
// measured separately in the report: ~3x a read of local memory). A received descriptor that is
// not a sealed memfd, or whose length exceeds the memory it names, is refused with
// INVALID_ARGUMENT and the value is not delivered.
//
// Limits. Reopening the memfd needs /proc (without it, buffers are still handed over, but are
// never recycled and received mappings are not cached); caching received mappings needs Linux
// 5.9 (unique memfd inode numbers; before, every receipt maps afresh). A receiver's cache may
// keep the pages of a buffer its sender has since freed, up to SetCacheLimit() per process
// (ReleaseIdle() lets them go). A process that holds a buffer and
// removes the lock by hand (F_OFD_SETLK with F_UNLCK) lets the sender reuse it under every
// holder of that hand-off. Code in the allocating process that kept a pointer from the writer
// after Freeze() could still write through it: the seal protects the buffer from other
// processes, not from the allocator itself, and a hostile sender can change a buffer it sent
// (check contents where you use them, not once on receipt). Buffers are made in power-of-two
// capacities of at least a page, so a buffer above a page takes at most twice its length (pages
// never touched cost nothing). For payloads under about 64 KiB a std::string item is cheaper.
//
// Fork children: a SharedBytes inherited by fork() is readable in the child and counts as held
// there until the child drops it or exits (a fork-started worker that never drops its copy
// pins the buffer for its life); the child never recycles its parent's buffers. A
// SharedBytesWriter alive at fork() is not protected: do not write it in the child.
//
// Thread-safety: a SharedBytes is an immutable value (copies share the buffer); any number of
// threads may read and copy it. A SharedBytesWriter is for one thread at a time. Allocate,
// Freeze, decoding and dropping are thread-safe.

#ifndef MPROC_SHM_SHARED_BYTES_H_
#define MPROC_SHM_SHARED_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/unique_fd.h"
#include "serialize/codec.h"

namespace mproc {

class SharedBytes;

namespace shm_internal {
struct Block;
struct Rep;

// Whether `p` (of `size` bytes) can be viewed as T: aligned, and a whole number of T.
absl::Status CheckView(const void* p, size_t size, size_t t_size, size_t t_align);

// `size` bytes at `p` viewed as an array of T (const T from const bytes), or CheckView's error.
template <typename T, typename Byte>
absl::StatusOr<std::span<T>> ViewAs(Byte* p, size_t size) {
  static_assert(std::is_trivially_copyable_v<std::remove_const_t<T>>,
                "As<T> needs a trivially copyable T");
  absl::Status s = CheckView(p, size, sizeof(T), alignof(T));
  if (!s.ok()) return s;
  return std::span<T>(reinterpret_cast<T*>(p), size / sizeof(T));
}
}  // namespace shm_internal

class SharedBytesWriter {
 public:
  // SharedBytesWriter::Allocate(size)
  //
  // A buffer of `size` bytes (0 allowed) to fill in place: a recycled one from this process's
  // pool when one of the same capacity is idle (its old contents are left as they were: write
  // every byte you hand over), else a fresh, zero-filled one. Never blocks. Errors:
  // INVALID_ARGUMENT above 2^40 bytes; RESOURCE_EXHAUSTED when out of descriptors, memory or
  // address space; other failed calls by errno. Thread-safe.
  [[nodiscard]] static absl::StatusOr<SharedBytesWriter> Allocate(size_t size);

  // Moving leaves the source empty.
  SharedBytesWriter() = default;
  SharedBytesWriter(SharedBytesWriter&& o) noexcept
      : block_(std::move(o.block_)), data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)) {}
  SharedBytesWriter& operator=(SharedBytesWriter&& o) noexcept {
    if (this != &o) {
      block_ = std::move(o.block_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~SharedBytesWriter();

  // The writable bytes (empty for a default-constructed or frozen writer).
  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<std::byte> bytes() const { return {data_, size_}; }

  // SharedBytesWriter::As<T>()
  //
  // The bytes as a writable array of T (trivially copyable). Errors: INVALID_ARGUMENT when the
  // length is not a whole number of T. Never blocks.
  template <typename T>
  [[nodiscard]] absl::StatusOr<std::span<T>> As() const {
    return shm_internal::ViewAs<T>(data_, size_);
  }

  // SharedBytesWriter::Freeze() &&
  //
  // Ends writing and returns the buffer as a SharedBytes of size() bytes; the writer is left
  // empty. Costs about 5 µs whatever the size (a reopen through /proc and a lock). Never
  // blocks. Errors: FAILED_PRECONDITION on an empty writer; RESOURCE_EXHAUSTED when out of
  // descriptors (the buffer then stays in the writer).
  [[nodiscard]] absl::StatusOr<SharedBytes> Freeze() &&;

 private:
  std::shared_ptr<shm_internal::Block> block_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

class SharedBytes {
 public:
  // An empty buffer (size 0, no memory). Copies share the buffer; moving leaves the source
  // empty.
  SharedBytes() = default;
  SharedBytes(const SharedBytes&) = default;
  SharedBytes& operator=(const SharedBytes&) = default;
  SharedBytes(SharedBytes&& o) noexcept
      : rep_(std::move(o.rep_)), data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)) {}
  SharedBytes& operator=(SharedBytes&& o) noexcept {
    if (this != &o) {
      rep_ = std::move(o.rep_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }

  // SharedBytes::CopyOf(bytes)
  //
  // A buffer holding a copy of `bytes` (Allocate, memcpy, Freeze). Errors: as theirs.
  [[nodiscard]] static absl::StatusOr<SharedBytes> CopyOf(std::span<const std::byte> bytes);
  [[nodiscard]] static absl::StatusOr<SharedBytes> CopyOf(std::string_view bytes) {
    return CopyOf(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
  }

  // SharedBytes::FromDescriptor(fd, size)
  //
  // Adopts a buffer received as a descriptor (what Codec<SharedBytes> does). Errors:
  // INVALID_ARGUMENT when `fd` is not a memfd sealed against shrinking, growing and writing,
  // or `size` exceeds its length; RESOURCE_EXHAUSTED when it cannot be mapped. `fd` is closed
  // on an error. Never blocks. Thread-safe.
  [[nodiscard]] static absl::StatusOr<SharedBytes> FromDescriptor(UniqueFd fd, uint64_t size);

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }

  // SharedBytes::As<T>()
  //
  // A read-only view of the bytes as T (trivially copyable), decoded in place. Errors:
  // INVALID_ARGUMENT when the length is not a whole number of T. Never blocks.
  template <typename T>
  [[nodiscard]] absl::StatusOr<std::span<const T>> As() const {
    return shm_internal::ViewAs<const T>(data_, size_);
  }

  // The descriptor that travels for this buffer (-1 when empty; owned by the buffer).
  int descriptor() const;

  // SharedBytes::SetPoolLimit(bytes) / SetCacheLimit(bytes)
  //
  // The most memory this process keeps in idle buffers for recycling (default 512 MiB), and
  // in received buffers it keeps mapped for reuse (default 512 MiB). A buffer counts the pages
  // written in it (buffers up to 4 MiB count their capacity). Lowering a limit trims at once;
  // a buffer holding more than the limit is never kept. Thread-safe.
  static constexpr size_t kDefaultLimit = size_t{512} << 20;
  static void SetPoolLimit(size_t bytes);
  static void SetCacheLimit(size_t bytes);
  // SharedBytes::ReleaseIdle()
  //
  // Frees every idle pooled buffer and unmaps every cached mapping not in use now, keeping the
  // limits (for memory pressure, and for tests that count descriptors). Thread-safe.
  static void ReleaseIdle();
  // Bytes held now by buffers this process has dropped and keeps for reuse (some may still be
  // held by other processes), and by cached received mappings not in use.
  static size_t PoolBytes();
  static size_t CacheBytes();

 private:
  friend class SharedBytesWriter;
  SharedBytes(std::shared_ptr<const shm_internal::Rep> rep, const std::byte* data, size_t size)
      : rep_(std::move(rep)), data_(data), size_(size) {}
  std::shared_ptr<const shm_internal::Rep> rep_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// A SharedBytes travels as its descriptor and its length; the receiver checks both
// (SharedBytes::FromDescriptor) before the value is delivered.
template <>
struct Codec<SharedBytes> {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const SharedBytes& s) {
    const uint8_t tag = s.descriptor() >= 0 ? 1 : 0;
    b.Append(&tag, 1);
    if (tag == 0) return;
    b.PutVarint(b.AttachFd(s.descriptor()));
    b.PutVarint(s.size());
  }
  static bool Decode(DecodeReader& r, SharedBytes& out) {
    uint8_t tag;
    if (!r.Read(&tag, 1)) return false;
    if (tag == 0) {
      out = SharedBytes();
      return true;
    }
    uint64_t index, size;
    UniqueFd fd;
    if (tag != 1) return r.Fail("bad SharedBytes tag");
    if (!r.ReadVarint(&index) || !r.TakeFd(index, &fd) || !r.ReadVarint(&size)) return false;
    absl::StatusOr<SharedBytes> s = SharedBytes::FromDescriptor(std::move(fd), size);
    if (!s.ok()) return r.Fail(std::string(s.status().message()));
    out = *std::move(s);
    return true;
  }
};

}  // namespace mproc

#endif  // MPROC_SHM_SHARED_BYTES_H_
