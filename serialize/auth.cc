#include "serialize/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/syscall.h"
#include "serialize/cpython_framing.h"

namespace mproc {
namespace {

const EVP_MD* DigestByName(std::string_view name) {
  if (name == "md5") return EVP_md5();
  if (name == "sha256") return EVP_sha256();
  if (name == "sha384") return EVP_sha384();
  if (name == "sha3_256") return EVP_sha3_256();
  if (name == "sha3_384") return EVP_sha3_384();
  return nullptr;
}

constexpr size_t kMaxDigestNameLen = 8;  // CPython's _MAX_DIGEST_LEN
constexpr size_t kLegacyChallengeLen = 20;
constexpr size_t kLegacyResponseLen = 16;

absl::Status Unauth(std::string_view what) {
  return absl::UnauthenticatedError(absl::StrCat("authentication: ", AbslView(what)));
}

// Any failure inside the handshake is an authentication failure; keep the cause in the text.
absl::Status AsUnauth(const absl::Status& s, std::string_view stage) {
  if (s.ok() || absl::IsUnauthenticated(s)) return s;
  return Unauth(absl::StrCat(AbslView(stage), ": ", s.message()));
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::StatusOr<std::string> ReadHandshakeMessage(int fd, const Deadline& d, std::string_view stage) {
  std::string m;
  absl::Status s = ReadCPythonMessage(fd, kHandshakeMaxMessage, d, &m);
  if (!s.ok()) return AsUnauth(s, stage);
  return m;
}

// Splits "{name}mac" into the digest name and mac; legacy 16/20-byte forms are md5.
absl::StatusOr<std::pair<std::string, std::string_view>> SplitResponse(std::string_view r) {
  if (r.size() == kLegacyResponseLen || r.size() == kLegacyChallengeLen) {
    return std::make_pair(std::string("md5"), r);
  }
  if (r.empty() || r[0] != '{') return Unauth("response has no {digest} prefix");
  size_t close = r.find('}');
  if (close == std::string_view::npos || close > kMaxDigestNameLen + 1) {
    return Unauth("response has a malformed {digest} prefix");
  }
  std::string name(r.substr(1, close - 1));
  if (DigestByName(name) == nullptr) return Unauth(absl::StrCat("unsupported digest {", name, "}"));
  return std::make_pair(name, r.substr(close + 1));
}

}  // namespace

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::getrandom(out.data() + done, n - done, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      // getrandom cannot fail on Linux >= 3.17 once the pool is initialised; EAGAIN is only for
      // GRND_NONBLOCK. Anything else is a broken invariant.
      std::abort();
    }
    done += static_cast<size_t>(r);
  }
  return out;
}

absl::StatusOr<std::string> Hmac(std::string_view digest, std::string_view key,
                                 std::string_view data) {
  const EVP_MD* md = DigestByName(digest);
  if (md == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported digest: ", AbslView(digest)));
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  static const unsigned char kEmpty = 0;
  const void* k = key.empty() ? static_cast<const void*>(&kEmpty) : static_cast<const void*>(key.data());
  if (HMAC(md, k, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
           data.size(), out, &len) == nullptr) {
    return absl::InternalError("HMAC failed in OpenSSL");
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

absl::StatusOr<std::string> CreateResponse(std::string_view authkey, std::string_view message) {
  if (message.size() == kLegacyChallengeLen) {
    // A <= 3.11 server: bare HMAC-MD5 of the 20-byte challenge (an authentication failure,
    // as every other, where OpenSSL offers no MD5: a FIPS build).
    absl::StatusOr<std::string> mac = Hmac("md5", authkey, message);
    if (!mac.ok()) return Unauth("the legacy challenge needs MD5, which is unavailable here");
    return mac;
  }
  if (message.empty() || message[0] != '{') return Unauth("challenge has no {digest} prefix");
  size_t close = message.find('}');
  if (close == std::string_view::npos || close > kMaxDigestNameLen + 1) {
    return Unauth("challenge has a malformed {digest} prefix");
  }
  std::string name(message.substr(1, close - 1));
  absl::StatusOr<std::string> mac = Hmac(name, authkey, message);
  if (!mac.ok()) return Unauth(absl::StrCat("challenge asks for unsupported digest {", name, "}"));
  return absl::StrCat("{", name, "}", *mac);
}

absl::Status VerifyResponse(std::string_view authkey, std::string_view message,
                            std::string_view response) {
  absl::StatusOr<std::pair<std::string, std::string_view>> split = SplitResponse(response);
  if (!split.ok()) return split.status();
  absl::StatusOr<std::string> expected = Hmac(split->first, authkey, message);
  if (!expected.ok()) return Unauth(std::string(expected.status().message()));
  if (!ConstantTimeEquals(*expected, split->second)) return Unauth("digest received was wrong");
  return absl::OkStatus();
}

namespace {

// The challenge message (without "#CHALLENGE#") for `digest` and `nonce` (random if none).
absl::StatusOr<std::string> NewChallenge(std::string_view digest,
                                         const std::optional<std::string>& nonce) {
  if (DigestByName(digest) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported digest: ", AbslView(digest)));
  }
  return absl::StrCat("{", AbslView(digest), "}", nonce ? *nonce : RandomBytes(kChallengeNonceLength));
}

// What goes on the wire for challenge `message`.
std::string ChallengeFrame(std::string_view message) {
  return absl::StrCat(AbslView(kChallengePrefix), AbslView(message));
}

absl::Status SendChallenge(int fd, std::string_view message, const Deadline& deadline) {
  return AsUnauth(WriteCPythonMessage(fd, ChallengeFrame(message), deadline),
                  "sending challenge");
}

// Reads the answer to challenge `message`, and sends the verdict.
absl::Status CheckAnswer(int fd, std::string_view authkey, std::string_view message,
                         const Deadline& deadline) {
  absl::StatusOr<std::string> response = ReadHandshakeMessage(fd, deadline, "reading response");
  if (!response.ok()) return response.status();
  absl::Status verdict = VerifyResponse(authkey, message, *response);
  std::string_view reply = verdict.ok() ? kWelcome : kFailure;
  absl::Status sent = WriteCPythonMessage(fd, reply, deadline);
  if (!verdict.ok()) return verdict;
  return AsUnauth(sent, "sending welcome");
}

// Reads a challenge and makes the response to it (the first half of CPython's
// answer_challenge, but for the sending).
absl::StatusOr<std::string> AnswerFor(int fd, std::string_view authkey, const Deadline& deadline) {
  std::string challenge;
  bool started = false;
  absl::Status read =
      ReadCPythonMessage(fd, kHandshakeMaxMessage, deadline, &challenge, &started);
  if (absl::IsOutOfRange(read) && !started) {
    // Not a verdict on our key: nobody serves here any more (a server killed while its
    // listening socket lingers in the kernel for a moment, or one shutting down).
    return absl::UnavailableError(
        "the server closed the connection before sending its challenge (it is gone or not "
        "serving)");
  }
  MPROC_RETURN_IF_ERROR(AsUnauth(read, "reading challenge"));
  std::string_view msg = challenge;
  if (msg.substr(0, kChallengePrefix.size()) != kChallengePrefix) {
    return Unauth("protocol error, expected a challenge");
  }
  msg.remove_prefix(kChallengePrefix.size());
  if (msg.size() < kLegacyChallengeLen) return Unauth("challenge too short");
  return CreateResponse(authkey, msg);
}

// The verdict on our response (the second half of CPython's answer_challenge): true for
// welcome, false for anything else (rejected); an error when none could be read.
absl::StatusOr<bool> ReadVerdict(int fd, const Deadline& deadline) {
  absl::StatusOr<std::string> verdict = ReadHandshakeMessage(fd, deadline, "reading verdict");
  if (!verdict.ok()) return verdict.status();
  return *verdict == kWelcome;
}

absl::Status Rejected() { return Unauth("digest sent was rejected"); }

}  // namespace

absl::Status DeliverChallenge(int fd, std::string_view authkey, const Deadline& deadline,
                              std::string_view digest, std::optional<std::string> nonce) {
  MPROC_ASSIGN_OR_RETURN(std::string message, NewChallenge(digest, nonce));
  MPROC_RETURN_IF_ERROR(SendChallenge(fd, message, deadline));
  return CheckAnswer(fd, authkey, message, deadline);
}

absl::Status AnswerChallenge(int fd, std::string_view authkey, const Deadline& deadline) {
  MPROC_ASSIGN_OR_RETURN(std::string response, AnswerFor(fd, authkey, deadline));
  MPROC_RETURN_IF_ERROR(
      AsUnauth(WriteCPythonMessage(fd, response, deadline), "sending response"));
  MPROC_ASSIGN_OR_RETURN(bool welcome, ReadVerdict(fd, deadline));
  return welcome ? absl::OkStatus() : Rejected();
}

absl::Status ServerHandshake(int fd, std::string_view authkey, const Deadline& deadline) {
  MPROC_RETURN_IF_ERROR(DeliverChallenge(fd, authkey, deadline));
  return AnswerChallenge(fd, authkey, deadline);
}

absl::Status ClientHandshake(int fd, std::string_view authkey, const Deadline& deadline) {
  // CPython's messages in CPython's order, with one wait fewer: our challenge goes right behind
  // our response instead of after the verdict, so the server (which reads its messages in
  // order, CPython's too) sends its verdict and its answer in one go. The client waits for the
  // server twice (its challenge; then its verdict and answer), not three times.
  // Both messages go in one write, so that over TCP Nagle's algorithm does not hold the second
  // back until the first is acknowledged.
  MPROC_ASSIGN_OR_RETURN(std::string response, AnswerFor(fd, authkey, deadline));
  MPROC_ASSIGN_OR_RETURN(std::string message, NewChallenge("sha256", std::nullopt));
  const std::string challenge = ChallengeFrame(message);
  const std::string both =
      absl::StrCat(AbslView(CPythonLengthHeader(response.size())), AbslView(response),
                   AbslView(CPythonLengthHeader(challenge.size())), AbslView(challenge));
  const absl::Status sent =
      AsUnauth(WriteAll(fd, both.data(), both.size(), deadline, "write(handshake)"),
               "sending response and challenge");
  // A server that rejected our response may have hung up before our challenge reached it: its
  // verdict, already sent, is the error to report; else a failed send is.
  absl::StatusOr<bool> welcome = ReadVerdict(fd, deadline);
  if (welcome.ok() && !*welcome) return Rejected();
  MPROC_RETURN_IF_ERROR(sent);
  MPROC_RETURN_IF_ERROR(welcome.status());
  return CheckAnswer(fd, authkey, message, deadline);
}

ServerHandshaker::ServerHandshaker(int fd, std::string authkey)
    : fd_(fd), authkey_(std::move(authkey)) {}

absl::Status ServerHandshaker::Start() {
  challenge_ = absl::StrCat("{sha256}", RandomBytes(kChallengeNonceLength));
  absl::Status s = WriteCPythonMessage(
      fd_, absl::StrCat(AbslView(kChallengePrefix), challenge_), Deadline::After(absl::Seconds(1)));
  if (!s.ok()) state_ = State::kFailed;
  return AsUnauth(s, "sending challenge");
}

namespace {

// Reads into dst[*have, want) what the socket holds, never blocking: OK(true) once it is full,
// OK(false) when the socket ran dry first, UNAUTHENTICATED when the client is gone.
absl::StatusOr<bool> RecvSome(int fd, char* dst, size_t want, size_t* have) {
  while (*have < want) {
    ssize_t n = ::recv(fd, dst + *have, want - *have, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
      return Unauth("the client closed the connection during the handshake");
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      return Unauth(absl::StrCat("reading the handshake: ", ErrnoName(errno)));
    }
    *have += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<bool> ServerHandshaker::ReadMessage() {
  if (header_have_ < sizeof(header_)) {
    MPROC_ASSIGN_OR_RETURN(bool full, RecvSome(fd_, reinterpret_cast<char*>(header_),
                                               sizeof(header_), &header_have_));
    if (!full) return false;
    // CPython's framing: a 4-byte big-endian signed length (the 8-byte form is for > 2 GiB,
    // never a handshake message).
    const uint32_t len = (uint32_t{header_[0]} << 24) | (uint32_t{header_[1]} << 16) |
                         (uint32_t{header_[2]} << 8) | uint32_t{header_[3]};
    if (len > kHandshakeMaxMessage) {
      return Unauth(absl::StrCat("handshake message of ", static_cast<int32_t>(len),
                                 " bytes (at most ", kHandshakeMaxMessage, ")"));
    }
    message_.assign(len, '\0');
    message_have_ = 0;
  }
  MPROC_ASSIGN_OR_RETURN(bool full,
                         RecvSome(fd_, message_.data(), message_.size(), &message_have_));
  if (!full) return false;
  header_have_ = 0;  // the next read starts a new message
  return true;
}

absl::Status ServerHandshaker::Step() {
  const Deadline write_deadline = Deadline::After(absl::Seconds(1));
  switch (state_) {
    case State::kResponse: {  // the client's answer to our challenge
      absl::Status verdict = VerifyResponse(authkey_, challenge_, message_);
      absl::Status sent =
          WriteCPythonMessage(fd_, verdict.ok() ? kWelcome : kFailure, write_deadline);
      MPROC_RETURN_IF_ERROR(verdict);
      MPROC_RETURN_IF_ERROR(AsUnauth(sent, "sending welcome"));
      state_ = State::kChallenge;
      return absl::OkStatus();
    }
    case State::kChallenge: {  // the client's challenge to us
      std::string_view msg = message_;
      if (msg.substr(0, kChallengePrefix.size()) != kChallengePrefix) {
        return Unauth("protocol error, expected a challenge");
      }
      msg.remove_prefix(kChallengePrefix.size());
      if (msg.size() < kLegacyChallengeLen) return Unauth("challenge too short");
      MPROC_ASSIGN_OR_RETURN(std::string response, CreateResponse(authkey_, msg));
      MPROC_RETURN_IF_ERROR(
          AsUnauth(WriteCPythonMessage(fd_, response, write_deadline), "sending response"));
      state_ = State::kVerdict;
      return absl::OkStatus();
    }
    case State::kVerdict:
      if (message_ != kWelcome) return Rejected();
      state_ = State::kDone;
      return absl::OkStatus();
    case State::kDone:
    case State::kFailed:
      break;
  }
  return absl::FailedPreconditionError("handshake already finished");
}

absl::StatusOr<bool> ServerHandshaker::OnReadable() {
  while (state_ != State::kDone) {
    if (state_ == State::kFailed) return Unauth("the handshake already failed");
    absl::StatusOr<bool> got = ReadMessage();
    absl::Status s = got.ok() ? absl::OkStatus() : got.status();
    if (s.ok() && !*got) return false;  // more bytes to come
    if (s.ok()) s = Step();
    if (!s.ok()) {
      state_ = State::kFailed;
      return s;
    }
  }
  return true;
}

}  // namespace mproc
