// serialize/frame.h — the mproc frame: how internal channels carry one message and its fds.
//
//   +--------+---------+------+----------+-------------+---------------------+
//   | magic  | version | kind | fd count | payload len | payload ...         |
//   | 4 B    | 1 B     | 1 B  | 2 B      | 8 B         | payload len bytes   |
//   +--------+---------+------+----------+-------------+---------------------+
//
// All header fields are little-endian (same-machine IPC). The fds travel with the header as
// SCM_RIGHTS ancillary data, so a frame that carries fds can cross only an AF_UNIX socket
// (SOCK_STREAM or SOCK_SEQPACKET); writing one to a pipe is refused (FAILED_PRECONDITION, or a
// compile error through WritePipeValue). No checksum: the transports are kernel-local and
// loss-free; a measured checksum would add cost for no failure it could catch.
//
// Reading is defensive: the payload length is checked against a limit (default 256 MiB)
// before anything is allocated, and the receive buffer grows as bytes arrive, never to the
// claimed length up front. recvmsg uses MSG_CMSG_CLOEXEC and a control buffer for the kernel's
// maximum of 253 fds; MSG_CTRUNC or a count that differs from the header is INVALID_ARGUMENT
// (every received fd is closed). After any read error the channel is desynchronised: close it.
//
//   EncodeBuffer buf;
//   Encode(item, buf);
//   MPROC_RETURN_IF_ERROR(WriteFrame(sock, kKindItem, buf, Deadline::After(timeout)));
//   MPROC_ASSIGN_OR_RETURN(Frame f, ReadFrame(sock, Deadline::Infinite()));
//   MPROC_ASSIGN_OR_RETURN(Item item, Decode<Item>(f.payload(), std::move(f.fds)));
//
// Thread-safety: one writer and one reader per fd at a time (callers serialise).

#ifndef MPROC_SERIALIZE_FRAME_H_
#define MPROC_SERIALIZE_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"
#include "base/unique_fd.h"
#include "serialize/buffer.h"
#include "serialize/codec.h"

namespace mproc {

inline constexpr uint32_t kFrameMagic = 0x4352504d;  // "MPRC" in memory order
inline constexpr uint8_t kFrameVersion = 1;
inline constexpr size_t kFrameHeaderSize = 16;
inline constexpr size_t kMaxFdsPerFrame = 253;  // the kernel's SCM_MAX_FD
inline constexpr uint64_t kDefaultMaxFramePayload = uint64_t{256} << 20;

struct FrameHeader {
  uint8_t kind = 0;
  uint16_t fd_count = 0;
  uint64_t payload_len = 0;
};

struct FrameLimits {
  uint64_t max_payload = kDefaultMaxFramePayload;
};

// What kind of descriptor a frame travels over. kDetect asks the kernel (one or two syscalls
// per call); hot paths that know pass the kind.
enum class FdKind { kDetect, kPipe, kStreamSocket, kSeqpacketSocket, kOtherSocket };

// The kind of `fd` (kPipe for anything that is not a socket: pipes, FIFOs, files).
FdKind DetectFdKind(int fd);

// A received frame. payload() is 16-byte aligned (zero-copy span views rely on it).
struct Frame {
  uint8_t kind = 0;
  std::vector<UniqueFd> fds;
  std::span<const std::byte> payload() const { return {data.get(), size}; }

  // Storage, reused by ReadFrameInto.
  std::unique_ptr<std::byte[]> data;
  size_t size = 0;
  size_t capacity = 0;
};

// Encodes a header into 16 bytes.
void EncodeFrameHeader(const FrameHeader& h, std::byte out[kFrameHeaderSize]);

// Parses and validates 16 header bytes against `limits`: INVALID_ARGUMENT for a bad magic,
// version or fd count, RESOURCE_EXHAUSTED for a payload over the limit.
[[nodiscard]] absl::StatusOr<FrameHeader> ParseFrameHeader(std::span<const std::byte> bytes,
                                             const FrameLimits& limits = {});

// Writes one frame: header (with `fds` as SCM_RIGHTS when non-empty) and payload, before
// `deadline`. OUT_OF_RANGE when the peer is gone; FAILED_PRECONDITION when fds would go to a
// descriptor that is not an AF_UNIX socket; INVALID_ARGUMENT for more than 253 fds or a payload
// over the limit.
// A SOCK_SEQPACKET frame is one record (atomic for concurrent readers); its size is bounded
// by the socket's send buffer (EMSGSIZE -> RESOURCE_EXHAUSTED).
absl::Status WriteFrame(int fd, uint8_t kind, std::span<const std::byte> payload,
                        std::span<const int> fds, const Deadline& deadline,
                        const FrameLimits& limits = {}, FdKind fd_kind = FdKind::kDetect);
// As WriteFrame, with the payload given in up to 4 parts sent back to back (no joining copy).
absl::Status WriteFrameParts(int fd, uint8_t kind,
                             std::span<const std::span<const std::byte>> parts,
                             std::span<const int> fds, const Deadline& deadline,
                             const FrameLimits& limits = {}, FdKind fd_kind = FdKind::kDetect);
inline absl::Status WriteFrame(int fd, uint8_t kind, const EncodeBuffer& buf,
                               const Deadline& deadline, const FrameLimits& limits = {},
                               FdKind fd_kind = FdKind::kDetect) {
  return WriteFrame(fd, kind, buf.bytes(), buf.fds(), deadline, limits, fd_kind);
}

// Reads one frame before `deadline`, reusing `frame`'s storage. OUT_OF_RANGE at a clean end of
// stream before the first header byte ("peer closed") or in the middle of a frame (the message
// says so); DEADLINE_EXCEEDED; INVALID_ARGUMENT / RESOURCE_EXHAUSTED for malformed frames.
absl::Status ReadFrameInto(int fd, Frame& frame, const Deadline& deadline,
                           const FrameLimits& limits = {}, FdKind fd_kind = FdKind::kDetect);
[[nodiscard]]
absl::StatusOr<Frame> ReadFrame(int fd, const Deadline& deadline, const FrameLimits& limits = {},
                                FdKind fd_kind = FdKind::kDetect);

// Parses a complete frame held in memory (no fds): the same validation as ReadFrame. For
// tests and fuzzers.
[[nodiscard]]
absl::StatusOr<Frame> ParseFrame(std::span<const std::byte> bytes, const FrameLimits& limits = {});

// Encodes `value` and writes it as one frame.
template <typename T>
absl::Status WriteValue(int fd, uint8_t kind, const T& value, const Deadline& deadline,
                        EncodeBuffer* scratch = nullptr) {
  EncodeBuffer local;
  EncodeBuffer& buf = scratch ? *scratch : local;
  buf.Clear();
  Encode(value, buf);
  return WriteFrame(fd, kind, buf, deadline);
}

// The same for a pipe: a value type that carries fds is a compile error here.
template <typename T>
absl::Status WritePipeValue(int fd, uint8_t kind, const T& value, const Deadline& deadline,
                            EncodeBuffer* scratch = nullptr) {
  static_assert(!kTypeCarriesFds<T>,
                "this type carries file descriptors, which cannot cross a pipe: send it over an "
                "AF_UNIX socket (WriteValue) instead");
  return WriteValue(fd, kind, value, deadline, scratch);
}

// Reads one frame and decodes it as T (which must claim every fd the frame carried).
template <typename T>
[[nodiscard]] absl::StatusOr<T> ReadValue(int fd, const Deadline& deadline, uint8_t* kind = nullptr,
                            const FrameLimits& limits = {}) {
  Frame f;
  absl::Status s = ReadFrameInto(fd, f, deadline, limits);
  if (!s.ok()) return s;
  if (kind) *kind = f.kind;
  return Decode<T>(f.payload(), std::move(f.fds));
}

}  // namespace mproc

#endif  // MPROC_SERIALIZE_FRAME_H_
