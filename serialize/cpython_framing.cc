#include "serialize/cpython_framing.h"

#include <endian.h>
#include <poll.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/syscall.h"

namespace mproc {

std::string CPythonLengthHeader(uint64_t len) {
  std::string h;
  if (len > 0x7fffffffu) {
    uint32_t minus_one = htobe32(0xffffffffu);
    uint64_t big = htobe64(len);
    h.append(reinterpret_cast<const char*>(&minus_one), 4);
    h.append(reinterpret_cast<const char*>(&big), 8);
  } else {
    uint32_t be = htobe32(static_cast<uint32_t>(len));
    h.append(reinterpret_cast<const char*>(&be), 4);
  }
  return h;
}

absl::Status WriteCPythonMessage(int fd, std::span<const std::byte> payload,
                                 const Deadline& deadline, bool* started) {
  bool unused;
  if (started == nullptr) started = &unused;
  std::string header = CPythonLengthHeader(payload.size());
  size_t written = 0;
  if (payload.size() <= 64 << 10) {
    // Small messages: one buffer, one write, as CPython does below 16 KiB.
    std::string all = header;
    all.append(reinterpret_cast<const char*>(payload.data()), payload.size());
    absl::Status s = WriteAll(fd, all.data(), all.size(), deadline, "write(connection message)",
                              &written);
    *started = written > 0;
    return s;
  }
  absl::Status s = WriteAll(fd, header.data(), header.size(), deadline,
                            "write(connection header)", &written);
  *started = written > 0;
  if (!s.ok()) return s;
  return WriteAll(fd, payload.data(), payload.size(), deadline, "write(connection message)");
}

absl::Status ReadCPythonMessage(int fd, uint64_t max_len, const Deadline& deadline,
                                std::string* out, bool* started) {
  out->clear();
  if (started != nullptr) *started = false;
  // A message (a reply, a handshake step) usually comes within microseconds: spin briefly
  // before blocking, which saves a cross-CPU wake-up (base/syscall.h).
  if (!SpinUntilReady(fd, POLLIN, deadline) && !deadline.infinite()) {
    // Wait for the first byte here, so that a timeout before the message consumed nothing.
    const int r = WaitReadable(fd, deadline);
    if (r < 0) return ErrnoToStatus(-r, "poll(connection)");
    if (r == 0) return absl::DeadlineExceededError("read(connection header): timed out");
  }
  // From here on a failure other than a clean end of file leaves the stream mid-message.
  if (started != nullptr) *started = true;
  uint32_t be;
  // A clean EOF before the first byte is "peer closed"; ReadExact says how many bytes came.
  absl::Status s = ReadExact(fd, &be, 4, deadline, "read(connection header)");
  if (!s.ok()) {
    if (absl::IsOutOfRange(s) && s.message().find("after 0 of") != absl::string_view::npos) {
      if (started != nullptr) *started = false;
      return absl::OutOfRangeError("peer closed the connection");
    }
    return s;
  }
  int32_t len32 = static_cast<int32_t>(be32toh(be));
  uint64_t len;
  if (len32 == -1) {
    uint64_t be64;
    s = ReadExact(fd, &be64, 8, deadline, "read(connection long header)");
    if (!s.ok()) return s;
    len = be64toh(be64);
  } else if (len32 < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad message length: ", len32));
  } else {
    len = static_cast<uint64_t>(len32);
  }
  if (len > max_len) {
    return absl::ResourceExhaustedError(
        absl::StrCat("bad message length: ", len, " exceeds the limit of ", max_len));
  }
  constexpr size_t kChunk = 64 << 10;
  size_t have = 0;
  while (have < len) {
    size_t next = std::min<uint64_t>(len, std::max<size_t>(kChunk, out->size() * 2));
    out->resize(next);
    s = ReadExact(fd, out->data() + have, next - have, deadline, "read(connection message)");
    if (!s.ok()) {
      out->clear();
      return s;
    }
    have = next;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadCPythonMessage(int fd, uint64_t max_len, const Deadline& deadline) {
  std::string out;
  absl::Status s = ReadCPythonMessage(fd, max_len, deadline, &out);
  if (!s.ok()) return s;
  return out;
}

}  // namespace mproc
