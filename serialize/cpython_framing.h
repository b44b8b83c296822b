// serialize/cpython_framing.h — the length framing of Python's multiprocessing.connection.
//
// Every message is a 4-byte big-endian signed length and the payload; a payload longer than
// 0x7fffffff bytes is sent as length -1 followed by an 8-byte big-endian unsigned length
// (CPYTHON-CONTRACT §1.4 CONN-21). Connection (ipc/) speaks this so Python peers can talk to
// mproc at the bytes level; the authkey handshake (serialize/auth.h) runs over it too.
//
// Reading checks the announced length against `max_len` before allocating anything, and grows
// the buffer as bytes arrive. A length over the limit is RESOURCE_EXHAUSTED ("bad message
// length", as CPython's OSError); a negative length other than -1 is INVALID_ARGUMENT. After
// either, the stream is desynchronised: close it.
//
// Thread-safety: one reader and one writer per fd at a time.

#ifndef MPROC_SERIALIZE_CPYTHON_FRAMING_H_
#define MPROC_SERIALIZE_CPYTHON_FRAMING_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"

namespace mproc {

// Writes one message (header and payload, one writev/sendmsg where they fit). `*started`
// (optional) says whether any byte of it went out: a failure with *started false left the
// stream as it was, one with *started true left it mid-message.
absl::Status WriteCPythonMessage(int fd, std::span<const std::byte> payload,
                                 const Deadline& deadline, bool* started = nullptr);
inline absl::Status WriteCPythonMessage(int fd, std::string_view payload,
                                        const Deadline& deadline) {
  return WriteCPythonMessage(
      fd, {reinterpret_cast<const std::byte*>(payload.data()), payload.size()}, deadline);
}

// Reads one message of at most `max_len` bytes into `out` (its capacity is reused).
// OUT_OF_RANGE when the peer closed before a message began or in its middle.
// `*started` (optional) says whether any byte of the message was consumed: a failure with
// *started false (a timeout before the message began) leaves the stream where it was, one
// with *started true leaves it mid-message.
absl::Status ReadCPythonMessage(int fd, uint64_t max_len, const Deadline& deadline,
                                std::string* out, bool* started = nullptr);
[[nodiscard]]
absl::StatusOr<std::string> ReadCPythonMessage(int fd, uint64_t max_len, const Deadline& deadline);

// The header bytes for a payload of `len` bytes (4 or 12 bytes).
std::string CPythonLengthHeader(uint64_t len);

}  // namespace mproc

#endif  // MPROC_SERIALIZE_CPYTHON_FRAMING_H_
