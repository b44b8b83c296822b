// serialize/auth.h — the authkey handshake of Python's multiprocessing.connection, byte for byte.
//
// Mutual HMAC challenge–response (CPYTHON-CONTRACT §2), over CPython's length framing:
//
//   server (Listener.accept, fork server)      client (Client(), Process.start)
//   -> "#CHALLENGE#{sha256}" + 40 random bytes
//                                             <- "{sha256}" + HMAC-SHA256(key, "{sha256}"+nonce)
//   -> "#WELCOME#" or "#FAILURE#"
//                 ... then the same with the roles swapped ...
//
// The server accepts whichever allowed digest the response names (md5, sha256, sha384,
// sha3_256, sha3_384); a bare 16-byte response is legacy HMAC-MD5 (Python <= 3.11 clients);
// a bare 20-byte challenge is answered with bare HMAC-MD5 (Python <= 3.11 servers). Every
// handshake read is capped at 256 bytes. Comparisons are constant-time (CRYPTO_memcmp); HMAC
// is OpenSSL 3's one-shot HMAC(); nonces come from getrandom().
//
// Every failure — wrong key, protocol error, oversized or malformed message, peer gone
// mid-handshake — is UNAUTHENTICATED with a message saying which ("digest received was wrong",
// "digest sent was rejected", ...), but one: a server that hangs up before sending a byte of
// its challenge passed no verdict on the key, and the client's side (ClientHandshake,
// AnswerChallenge) says UNAVAILABLE (nobody serves there: a killed server's listening socket
// can linger in the kernel for a moment and take connections it then drops). An empty key is
// still a key; "no key" means the caller skips the handshake.
//
//   MPROC_RETURN_IF_ERROR(ServerHandshake(conn_fd, authkey, Deadline::After(absl::Seconds(5))));

#ifndef MPROC_SERIALIZE_AUTH_H_
#define MPROC_SERIALIZE_AUTH_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/deadline.h"

namespace mproc {

inline constexpr std::string_view kChallengePrefix = "#CHALLENGE#";
inline constexpr std::string_view kWelcome = "#WELCOME#";
inline constexpr std::string_view kFailure = "#FAILURE#";
inline constexpr size_t kChallengeNonceLength = 40;
inline constexpr size_t kHandshakeMaxMessage = 256;

// Sends a challenge and checks the answer (CPython's deliver_challenge). `digest` names the
// digest to ask for ("sha256" by default). `nonce` (40 bytes) is for tests; normally random.
absl::Status DeliverChallenge(int fd, std::string_view authkey, const Deadline& deadline,
                              std::string_view digest = "sha256",
                              std::optional<std::string> nonce = std::nullopt);

// Answers a challenge and reads the verdict (CPython's answer_challenge).
absl::Status AnswerChallenge(int fd, std::string_view authkey, const Deadline& deadline);

// The server's side of mutual authentication (deliver, then answer) and the client's
// (answer, then deliver). The client sends its challenge right behind its response, before
// the verdict: the same messages in the same order, so any server that reads its messages in
// order (CPython's, ServerHandshake, ServerHandshaker) answers both in one wake-up, and the
// client waits for the server twice instead of three times.
absl::Status ServerHandshake(int fd, std::string_view authkey, const Deadline& deadline);
absl::Status ClientHandshake(int fd, std::string_view authkey, const Deadline& deadline);

// The pure parts, exposed for test vectors (CPython's _create_response / _verify_challenge):
// the response to a challenge payload `message` (without "#CHALLENGE#"), and the check of a
// response against the message that was sent.
[[nodiscard]]
absl::StatusOr<std::string> CreateResponse(std::string_view authkey, std::string_view message);
absl::Status VerifyResponse(std::string_view authkey, std::string_view message,
                            std::string_view response);

// The server's side of the handshake (ServerHandshake's bytes) as a state machine, for a
// server that serves many clients from one thread (Listener, an event loop): no call blocks,
// so a client that connects and never speaks holds up nobody.
//
//   ServerHandshaker hs(conn_fd, key);            // conn_fd: a non-blocking socket
//   MPROC_RETURN_IF_ERROR(hs.Start());            // sends the challenge
//   ... when conn_fd is readable:
//   MPROC_ASSIGN_OR_RETURN(bool done, hs.OnReadable());   // true: authenticated
//
// OnReadable reads only what the handshake's messages hold (never a byte of what the client
// sends after it), so the connection is ready for application data once it returns true.
// Every failure is UNAUTHENTICATED, as ServerHandshake's. Writes are a few dozen bytes into
// a fresh socket's buffer; one that would block is a failure. Not thread-safe.
class ServerHandshaker {
 public:
  ServerHandshaker(int fd, std::string authkey);
  // ServerHandshaker::Start()
  //
  // Sends the challenge (the server speaks first): a few dozen bytes into a fresh socket's
  // buffer, so it does not block in practice (it gives up after 1 s). UNAUTHENTICATED when it
  // cannot be written (the client is gone).
  absl::Status Start();
  // ServerHandshaker::OnReadable()
  //
  // Call when the socket is readable: reads what arrived and takes the next step. OK(true):
  // authenticated (the client's challenge answered too); OK(false): more bytes needed;
  // UNAUTHENTICATED: the handshake failed (wrong key, malformed message, peer gone). Never
  // blocks.
  [[nodiscard]] absl::StatusOr<bool> OnReadable();
  bool done() const { return state_ == State::kDone; }

 private:
  enum class State { kResponse, kChallenge, kVerdict, kDone, kFailed };
  // One whole handshake message from what is buffered (reading more as it comes): OK(true)
  // with it in `message_`, OK(false) when incomplete.
  [[nodiscard]] absl::StatusOr<bool> ReadMessage();
  absl::Status Step();

  int fd_;
  std::string authkey_;
  State state_ = State::kResponse;
  std::string challenge_;  // the message our challenge carried, to check the response by
  unsigned char header_[4] = {};
  size_t header_have_ = 0;
  std::string message_;
  size_t message_have_ = 0;
};

// HMAC(key, data) with a digest named as CPython names it; INVALID_ARGUMENT for an unknown name.
[[nodiscard]] absl::StatusOr<std::string> Hmac(std::string_view digest, std::string_view key,
                                 std::string_view data);

// `n` bytes from the kernel's random source (getrandom).
std::string RandomBytes(size_t n);

}  // namespace mproc

#endif  // MPROC_SERIALIZE_AUTH_H_
