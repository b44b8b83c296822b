// libFuzzer target: the client side of the authkey handshake against arbitrary server bytes,
// over a real socket, plus the pure response checks. Never crashes; every failure is
// UNAUTHENTICATED.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "serialize/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4000) return 0;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // The pure parts.
  (void)mproc::CreateResponse("key", in);
  absl::Status v = mproc::VerifyResponse("key", "{sha256}" + std::string(40, 'n'), in);
  if (v.ok()) std::abort();  // a random response must not verify

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  if (size > 0 && ::send(sv[0], data, size, MSG_DONTWAIT) != static_cast<ssize_t>(size)) {
    ::close(sv[0]);
    ::close(sv[1]);
    return 0;
  }
  ::shutdown(sv[0], SHUT_WR);  // the "server" says nothing more
  absl::Status s = mproc::AnswerChallenge(sv[1], "key", mproc::Deadline::After(absl::Milliseconds(20)));
  // A "server" that said nothing at all is UNAVAILABLE (no verdict); anything else it says
  // that is not a good challenge is UNAUTHENTICATED.
  const absl::StatusCode want =
      size == 0 ? absl::StatusCode::kUnavailable : absl::StatusCode::kUnauthenticated;
  if (!s.ok() && s.code() != want) std::abort();
  ::close(sv[0]);
  ::close(sv[1]);
  return 0;
}
