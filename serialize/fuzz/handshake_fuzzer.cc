// libFuzzer target: the client side of the authkey handshake (ClientHandshake, as Client()
// runs it, and AnswerChallenge) against arbitrary server bytes, over a real socket, plus the
// pure response checks. Never crashes; every failure is UNAUTHENTICATED; the client never
// succeeds (the "server" cannot answer the client's random challenge).
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

  // A "server" that said nothing at all is UNAVAILABLE (no verdict); anything else it says
  // that is not a good challenge is UNAUTHENTICATED.
  const absl::StatusCode want =
      size == 0 ? absl::StatusCode::kUnavailable : absl::StatusCode::kUnauthenticated;
  // Each input three ways: AnswerChallenge, and ClientHandshake against a "server" that stops
  // writing but still reads, or one that is gone altogether (its sends then fail: the verdict
  // it left, if any, is still read).
  for (int way = 0; way < 3; ++way) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    if (size > 0 && ::send(sv[0], data, size, MSG_DONTWAIT) != static_cast<ssize_t>(size)) {
      ::close(sv[0]);
      ::close(sv[1]);
      return 0;
    }
    ::shutdown(sv[0], SHUT_WR);  // the "server" says nothing more
    if (way == 2) {
      ::close(sv[0]);
      sv[0] = -1;
    }
    const mproc::Deadline d = mproc::Deadline::After(absl::Milliseconds(20));
    absl::Status s = way == 0 ? mproc::AnswerChallenge(sv[1], "key", d)
                              : mproc::ClientHandshake(sv[1], "key", d);
    if (!s.ok() && s.code() != want) std::abort();
    if (way != 0 && s.ok()) std::abort();
    if (sv[0] >= 0) ::close(sv[0]);
    ::close(sv[1]);
  }
  return 0;
}
