// serialize/buffer.h — the byte buffers codecs write into and read from.
//
// EncodeBuffer is a growable byte buffer meant to be reused: Clear() keeps its capacity, so a
// steady stream of Put/Send calls allocates nothing. It also collects the descriptors a value
// attaches (borrowed: they must stay open until the frame is sent).
//
// DecodeReader walks a byte span received from another process. Every read is bounds-checked;
// the first failure records a Status (INVALID_ARGUMENT naming the offset) and every later read
// fails too, so codecs need only propagate `false`.
//
//   EncodeBuffer buf;
//   Encode(value, buf);                  // serialize/codec.h
//   ... send buf.bytes() and buf.fds() ...
//   DecodeReader r(received_bytes, std::move(received_fds));
//
// Thread-safety: neither class is thread-safe.

#ifndef MPROC_SERIALIZE_BUFFER_H_
#define MPROC_SERIALIZE_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "base/unique_fd.h"

namespace mproc {

class EncodeBuffer {
 public:
  EncodeBuffer() = default;
  explicit EncodeBuffer(size_t reserve) { Reserve(reserve); }
  EncodeBuffer(EncodeBuffer&&) noexcept = default;
  EncodeBuffer& operator=(EncodeBuffer&&) noexcept = default;

  // Forgets the contents and attached fds; keeps the capacity.
  void Clear() {
    size_ = 0;
    fds_.clear();
    shared_.clear();
    kept_.clear();
  }

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  const std::byte* data() const { return data_.get(); }
  std::span<const std::byte> bytes() const { return {data_.get(), size_}; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_.get()), size_}; }

  // Appends `n` uninitialized bytes and returns where they start.
  std::byte* Extend(size_t n) {
    if (capacity_ - size_ < n) Grow(n);
    std::byte* p = data_.get() + size_;
    size_ += n;
    return p;
  }

  void Append(const void* p, size_t n) {
    if (n == 0) return;
    std::memcpy(Extend(n), p, n);
  }

  // LEB128, at most 10 bytes.
  void PutVarint(uint64_t v) {
    if (capacity_ - size_ < 10) Grow(10);
    std::byte* p = data_.get() + size_;
    while (v >= 0x80) {
      *p++ = static_cast<std::byte>(v | 0x80);
      v >>= 7;
    }
    *p++ = static_cast<std::byte>(v);
    size_ = static_cast<size_t>(p - data_.get());
  }

  // Pads with zero bytes until size() is a multiple of `align` (a power of two <= 16), so bulk
  // data can later be viewed in place (the receiving buffer is 16-byte aligned).
  void AlignTo(size_t align) {
    size_t pad = (align - (size_ & (align - 1))) & (align - 1);
    if (pad) std::memset(Extend(pad), 0, pad);
  }

  void Reserve(size_t n) {
    if (n > capacity_) Grow(n - size_);
  }

  // Attaches a descriptor (borrowed) and returns its index in this buffer.
  uint32_t AttachFd(int fd) {
    fds_.push_back(fd);
    return static_cast<uint32_t>(fds_.size() - 1);
  }
  // As AttachFd, but a descriptor already attached with AttachSharedFd is sent once: many
  // handles into one shared region travel as one descriptor plus offsets (the receiver takes
  // it with TakeSharedFd).
  uint32_t AttachSharedFd(int fd) {
    for (uint32_t i : shared_) {
      if (fds_[i] == fd) return i;
    }
    shared_.push_back(AttachFd(fd));
    return shared_.back();
  }
  const std::vector<int>& fds() const { return fds_; }

  // Keeps `owner` (what owns attached descriptors, e.g. a task's result) alive until this
  // buffer is cleared or destroyed, so the descriptors stay open until the buffer is sent.
  void Keep(std::shared_ptr<const void> owner) { kept_.push_back(std::move(owner)); }

 private:
  void Grow(size_t need);

  std::unique_ptr<std::byte[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
  std::vector<int> fds_;
  std::vector<uint32_t> shared_;  // indexes attached by AttachSharedFd
  std::vector<std::shared_ptr<const void>> kept_;  // owners of attached descriptors (Keep)
};

class DecodeReader {
 public:
  explicit DecodeReader(std::span<const std::byte> data)
      : begin_(data.data()), pos_(data.data()), end_(data.data() + data.size()) {}
  DecodeReader(std::span<const std::byte> data, std::vector<UniqueFd>&& fds)
      : begin_(data.data()), pos_(data.data()), end_(data.data() + data.size()),
        fds_(std::move(fds)) {}
  explicit DecodeReader(std::string_view s)
      : DecodeReader(std::span<const std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                                s.size())) {}

  size_t remaining() const { return static_cast<size_t>(end_ - pos_); }
  size_t offset() const { return static_cast<size_t>(pos_ - begin_); }
  bool ok() const { return status_.ok(); }
  const absl::Status& status() const { return status_; }

  // Copies `n` bytes out; false (and a recorded error) when fewer remain. The output is always
  // written (zeros on failure), so a caller's variable is never left uninitialised (and
  // optimising compilers do not warn that it might be, in users' -c opt builds).
  bool Read(void* out, size_t n) {
    if (!ok() || remaining() < n) {
      if (n) std::memset(out, 0, n);
      return Truncated(n);
    }
    if (n) std::memcpy(out, pos_, n);
    pos_ += n;
    return true;
  }

  // Returns a pointer to the next `n` bytes and skips them; nullptr on failure.
  const std::byte* Take(size_t n) {
    if (!ok() || remaining() < n) {
      Truncated(n);
      return nullptr;
    }
    const std::byte* p = pos_;
    pos_ += n;
    return p;
  }

  // Reads a varint into *v (0 on failure, as Read).
  bool ReadVarint(uint64_t* v) {
    *v = 0;
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (!ok() || pos_ == end_) return Truncated(1);
      uint8_t b = static_cast<uint8_t>(*pos_++);
      if (shift == 63 && b > 1) return Fail("varint overflows 64 bits");
      result |= uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) {
        *v = result;
        return true;
      }
    }
    return Fail("varint longer than 10 bytes");
  }

  // Skips the zero padding EncodeBuffer::AlignTo wrote.
  bool Align(size_t align) {
    size_t pad = (align - (offset() & (align - 1))) & (align - 1);
    return Take(pad) != nullptr || pad == 0;
  }

  // Takes ownership of attached descriptor `index`; each may be taken once.
  bool TakeFd(uint64_t index, UniqueFd* out);
  // A descriptor sent with AttachSharedFd, which any number of handles may name: each call
  // gets its own duplicate (the reader keeps the original until it is destroyed).
  bool TakeSharedFd(uint64_t index, UniqueFd* out);
  size_t fd_count() const { return fds_.size(); }
  // Descriptors no codec claimed (closed when the reader is destroyed).
  size_t unclaimed_fds() const;

  // Records an error (the first one wins) and returns false.
  bool Fail(std::string_view what);

 private:
  bool Truncated(size_t need);

  const std::byte* begin_;
  const std::byte* pos_;
  const std::byte* end_;
  std::vector<UniqueFd> fds_;
  std::vector<std::pair<uint64_t, UniqueFd>> shared_;  // taken by TakeSharedFd
  absl::Status status_;
};

}  // namespace mproc

#endif  // MPROC_SERIALIZE_BUFFER_H_
