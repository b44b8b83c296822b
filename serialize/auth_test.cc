#include "serialize/auth.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "absl/strings/escaping.h"
#include "base/fork_child.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "base/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "serialize/cpython_framing.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

const Deadline kLong = Deadline::Infinite();

std::string Hex(const std::string& h) { return absl::HexStringToBytes(h); }

std::string Nonce() {
  std::string n;
  for (int i = 0; i < 40; ++i) n.push_back(static_cast<char>(i));
  return n;
}

// Vectors computed with python3's hmac module (key b"mproc-test-key", nonce bytes(range(40))).
TEST(AuthVectorsTest, ResponsesMatchPythonByteForByte) {
  const std::string key = "mproc-test-key";
  const std::string msg = "{sha256}" + Nonce();
  EXPECT_THAT(CreateResponse(key, msg),
              IsOkAndHolds(Hex("7b7368613235367d412d4bb4ae5c2c5f1701e8787e4a69ba620ea8d33d956ae92f"
                               "0446aba97555a6")));
  for (auto [digest, want] : std::vector<std::pair<std::string, std::string>>{
           {"md5", "7b6d64357d577a7e243522e5d62b519d891a758ac2"},
           {"sha384",
            "7b7368613338347d6130421e372572feca999d9500f415d9257c7ad40cce61a0549f5f1581aee92355eb"
            "491d6e809218d9fb887b4cf858c0"},
           {"sha3_256",
            "7b736861335f3235367de6441530f53dd974b4132a9c1e648923ab089c1d6a26fb8693e8896c25cafb59"},
           {"sha3_384",
            "7b736861335f3338347d6063d5264aabde9ef3790018f4da55b447e0c4bde218f79246b73758d1b88828"
            "9dead130215e7aa225c9e49a36ddcce2"}}) {
    EXPECT_THAT(CreateResponse(key, "{" + digest + "}" + Nonce()), IsOkAndHolds(Hex(want)))
        << digest;
  }
  // A legacy (<= 3.11) server's 20-byte challenge is answered with bare HMAC-MD5.
  std::string legacy;
  for (int i = 100; i < 120; ++i) legacy.push_back(static_cast<char>(i));
  EXPECT_THAT(CreateResponse(key, legacy), IsOkAndHolds(Hex("e18aca22b0cdfdd274333b9c88d0ca24")));
  // The empty key is a key.
  EXPECT_THAT(Hmac("sha256", "", msg),
              IsOkAndHolds(Hex("d18b190a737f779d3125c4a2dfddcebf933e2f2713bc92fbe386ca25df9fd7af")));
}

TEST(AuthVectorsTest, VerifyAcceptsEveryAllowedDigestAndLegacyMd5) {
  const std::string key = "mproc-test-key";
  const std::string msg = "{sha256}" + Nonce();
  MPROC_EXPECT_OK(VerifyResponse(key, msg, *CreateResponse(key, msg)));
  // A 3.11 client answers a modern challenge with bare HMAC-MD5 over the whole message.
  MPROC_EXPECT_OK(VerifyResponse(key, msg, Hex("de6130402507be215a7c243045ce3208")));
  // The server accepts whichever allowed digest the response names.
  MPROC_EXPECT_OK(VerifyResponse(key, msg, "{sha3_256}" + *Hmac("sha3_256", key, msg)));
  EXPECT_THAT(VerifyResponse("other-key", msg, *CreateResponse(key, msg)),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("digest received was wrong")));
  EXPECT_THAT(VerifyResponse(key, msg, "{sha1}" + std::string(20, 'x')),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("unsupported digest")));
  EXPECT_THAT(VerifyResponse(key, msg, std::string(33, 'x')),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("prefix")));
  EXPECT_THAT(VerifyResponse(key, msg, "{sha256}short"),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

using testing::StreamSocketPair;

TEST(AuthHandshakeTest, MutualAuthenticationSucceedsWithTheSameKey) {
  for (std::string key : {std::string("secret"), std::string(), std::string(200, '\xab')}) {
    auto p = StreamSocketPair();
    absl::Status client;
    std::thread t([&] { client = ClientHandshake(p.b.get(), key, kLong); });
    absl::Status server = ServerHandshake(p.a.get(), key, kLong);
    t.join();
    MPROC_EXPECT_OK(server);
    MPROC_EXPECT_OK(client);
  }
}

TEST(AuthHandshakeTest, WrongKeyFailsOnBothSidesWithNoApplicationData) {
  auto p = StreamSocketPair();
  absl::Status client;
  std::thread t([&] { client = ClientHandshake(p.b.get(), "client-key", kLong); });
  absl::Status server = ServerHandshake(p.a.get(), "server-key", kLong);
  t.join();
  EXPECT_THAT(server, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("digest received was wrong")));
  EXPECT_THAT(client, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("digest sent was rejected")));
}

// The client sends its challenge right behind its response, before the verdict (the same
// messages in the same order). A server that holds its verdict until it has the client's
// challenge therefore finishes; a client that waited for the verdict first would never send
// it (before the change, this server's read timed out and the client with it).
TEST(AuthHandshakeTest, TheClientsChallengeFollowsItsResponseWithoutWaitingForTheVerdict) {
  auto p = StreamSocketPair();
  const std::string key = "secret";
  absl::Status client;
  std::thread t([&] { client = ClientHandshake(p.b.get(), key, Deadline::After(absl::Seconds(10))); });
  const Deadline soon = Deadline::After(absl::Seconds(5));
  const std::string message = "{sha256}" + std::string(kChallengeNonceLength, 'n');
  MPROC_ASSERT_OK(WriteCPythonMessage(p.a.get(), std::string(kChallengePrefix) + message, soon));
  ASSERT_OK_AND_ASSIGN(std::string response, ReadCPythonMessage(p.a.get(), 256, soon));
  // No verdict yet: the client's challenge must already be on its way.
  absl::StatusOr<std::string> challenge = ReadCPythonMessage(p.a.get(), 256, soon);
  MPROC_EXPECT_OK(VerifyResponse(key, message, response));
  MPROC_ASSERT_OK(WriteCPythonMessage(p.a.get(), kWelcome, soon));
  if (challenge.ok()) {
    ASSERT_EQ(challenge->rfind(kChallengePrefix, 0), 0u) << *challenge;
    ASSERT_OK_AND_ASSIGN(std::string answer,
                         CreateResponse(key, challenge->substr(kChallengePrefix.size())));
    MPROC_ASSERT_OK(WriteCPythonMessage(p.a.get(), answer, soon));
    EXPECT_THAT(ReadCPythonMessage(p.a.get(), 256, soon), IsOkAndHolds(std::string(kWelcome)));
  }
  t.join();
  MPROC_EXPECT_OK(challenge);
  MPROC_EXPECT_OK(client);
}

// Drives a ServerHandshaker on `fd` (made non-blocking) until it finishes; its result.
absl::Status RunHandshaker(int fd, std::string key) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  ServerHandshaker hs(fd, std::move(key));
  MPROC_RETURN_IF_ERROR(hs.Start());
  for (;;) {
    pollfd p = {fd, POLLIN, 0};
    if (::poll(&p, 1, 10'000) != 1) return absl::DeadlineExceededError("no bytes");
    absl::StatusOr<bool> done = hs.OnReadable();
    if (!done.ok()) return done.status();
    if (*done) return absl::OkStatus();
  }
}

// The non-blocking server speaks the same bytes as ServerHandshake: a blocking client passes
// or fails exactly as against it, and what the client sends right after the handshake is
// left on the socket for the application.
TEST(AuthHandshakeTest, TheNonBlockingServerSpeaksTheSameHandshake) {
  for (std::string key : {std::string("secret"), std::string()}) {
    auto p = StreamSocketPair();
    absl::Status client;
    std::thread t([&] {
      client = ClientHandshake(p.b.get(), key, kLong);
      if (client.ok()) client = WriteCPythonMessage(p.b.get(), "application data", kLong);
    });
    MPROC_EXPECT_OK(RunHandshaker(p.a.get(), key));
    t.join();
    MPROC_EXPECT_OK(client);
    ::fcntl(p.a.get(), F_SETFL, ::fcntl(p.a.get(), F_GETFL) & ~O_NONBLOCK);
    EXPECT_THAT(ReadCPythonMessage(p.a.get(), 1024, kLong), IsOkAndHolds("application data"));
  }
  auto p = StreamSocketPair();
  absl::Status client;
  std::thread t([&] { client = ClientHandshake(p.b.get(), "client-key", kLong); });
  EXPECT_THAT(RunHandshaker(p.a.get(), "server-key"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("digest received was wrong")));
  t.join();
  EXPECT_THAT(client, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("digest sent was rejected")));
  // Oversized and truncated messages fail it; a silent peer just leaves it waiting.
  auto q = StreamSocketPair();
  const unsigned char huge[] = {0, 0, 0x10, 0};  // a 4096-byte "response"
  ASSERT_EQ(::write(q.b.get(), huge, 4), 4);
  EXPECT_THAT(RunHandshaker(q.a.get(), "k"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("at most 256")));
  auto r = StreamSocketPair();
  ::fcntl(r.a.get(), F_SETFL, ::fcntl(r.a.get(), F_GETFL) | O_NONBLOCK);
  ServerHandshaker silent(r.a.get(), "k");
  MPROC_ASSERT_OK(silent.Start());
  EXPECT_THAT(silent.OnReadable(), IsOkAndHolds(false));
  r.b.Reset();
  EXPECT_THAT(silent.OnReadable(), StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("closed")));
}

TEST(AuthHandshakeTest, Python311ClientAnswerIsAccepted) {
  // The client side written by hand as Python 3.11 does it: bare HMAC-MD5 of the payload.
  auto p = StreamSocketPair();
  const std::string key = "mproc-test-key";
  std::string verdict;
  std::thread t([&] {
    std::string challenge = *ReadCPythonMessage(p.b.get(), 256, kLong);
    EXPECT_EQ(challenge, "#CHALLENGE#{sha256}" + Nonce());  // byte for byte
    ASSERT_THAT(WriteCPythonMessage(p.b.get(), Hex("de6130402507be215a7c243045ce3208"), kLong), IsOk());
    verdict = *ReadCPythonMessage(p.b.get(), 256, kLong);
  });
  MPROC_EXPECT_OK(DeliverChallenge(p.a.get(), key, kLong, "sha256", Nonce()));
  t.join();
  EXPECT_EQ(verdict, "#WELCOME#");
}

TEST(AuthHandshakeTest, LegacyServerChallengeIsAnsweredWithMd5) {
  auto p = StreamSocketPair();
  const std::string key = "mproc-test-key";
  std::string legacy;
  for (int i = 100; i < 120; ++i) legacy.push_back(static_cast<char>(i));
  std::string response;
  std::thread t([&] {
    ASSERT_THAT(WriteCPythonMessage(p.b.get(), "#CHALLENGE#" + legacy, kLong), IsOk());
    response = *ReadCPythonMessage(p.b.get(), 256, kLong);
    ASSERT_THAT(WriteCPythonMessage(p.b.get(), "#WELCOME#", kLong), IsOk());
  });
  MPROC_EXPECT_OK(AnswerChallenge(p.a.get(), key, kLong));
  t.join();
  EXPECT_EQ(response, Hex("e18aca22b0cdfdd274333b9c88d0ca24"));
}

TEST(AuthHandshakeTest, HostileHandshakeMessages) {
  struct Case {
    std::string message;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {std::string(257, 'x'), "bad message length"},
           {"#CHALLENGX#" + std::string(40, 'a'), "expected a challenge"},
           {"#CHALLENGE#short", "too short"},
           {"#CHALLENGE#{nosuchdigest}" + std::string(40, 'a'), "digest"},
           {"#CHALLENGE#no-prefix-and-long-enough-to-pass", "prefix"},
       }) {
    auto p = StreamSocketPair();
    ASSERT_THAT(WriteCPythonMessage(p.b.get(), c.message, kLong), IsOk());
    EXPECT_THAT(AnswerChallenge(p.a.get(), "k", Deadline::After(absl::Seconds(30))),
                StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr(c.error)))
        << c.message.substr(0, 30);
  }
  // A server that hangs up before its challenge passed no verdict on the key: UNAVAILABLE.
  // One that hangs up partway through it, or after it, did fail the handshake.
  {
    auto p = StreamSocketPair();
    p.b.Reset();
    EXPECT_THAT(AnswerChallenge(p.a.get(), "k", kLong),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("before sending its challenge")));
  }
  {
    auto p = StreamSocketPair();
    ASSERT_EQ(::write(p.b.get(), "\0\0", 2), 2);  // half a length header
    p.b.Reset();
    EXPECT_THAT(AnswerChallenge(p.a.get(), "k", kLong), StatusIs(absl::StatusCode::kUnauthenticated));
  }
  {
    auto p = StreamSocketPair();
    ASSERT_THAT(WriteCPythonMessage(p.b.get(), "#CHALLENGE#{sha256}" + std::string(40, 'a'), kLong),
                IsOk());
    p.b.Reset();
    EXPECT_THAT(AnswerChallenge(p.a.get(), "k", kLong), StatusIs(absl::StatusCode::kUnauthenticated));
  }
  {
    auto p = StreamSocketPair();
    EXPECT_THAT(DeliverChallenge(p.a.get(), "k", Deadline::After(absl::Milliseconds(50))),
                StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("timed out")));
  }
}

TEST(AuthTest, RandomBytesDiffer) {
  std::string a = RandomBytes(40), b = RandomBytes(40);
  EXPECT_EQ(a.size(), 40u);
  EXPECT_NE(a, b);
}

// ---- Live interop with python3's multiprocessing.connection (skipped without python3).

constexpr char kPyScript[] = R"(
import sys
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge, AuthenticationError
c = Connection(3)
mode, key = sys.argv[1], sys.argv[2].encode()
try:
    if mode == "client":
        answer_challenge(c, key); deliver_challenge(c, key)
    else:
        deliver_challenge(c, key); answer_challenge(c, key)
    c.send_bytes(b"python-ok")
    print("OK", flush=True)
except AuthenticationError as e:
    print("AUTHFAIL", e, flush=True)
)";

std::string FindPython() {
  for (const char* p : {"/usr/bin/python3", "/usr/local/bin/python3"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

struct PyRun {
  pid_t pid = -1;
  UniqueFd out;
};

// Python with `sock` as its descriptor 3 and its stdout on a pipe.
PyRun StartPython(const std::string& py, int sock, const std::string& mode, const std::string& key) {
  int out[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  PyRun r;
  r.pid = SpawnProgram({py, "-c", kPyScript, mode, key}, {.out = out[1], .fd3 = sock});
  EXPECT_GT(r.pid, 0) << "cannot start " << py;
  ::close(out[1]);
  r.out.Reset(out[0]);
  return r;
}

// Its output, once it has exited.
std::string Finish(PyRun& r) {
  std::string text = ReadToEnd(r.out.get());
  (void)ReapChild(r.pid);
  return text;
}

// CPython in `python_role` ("client" or "server") against our `handshake` (the other side),
// with the right key and then a wrong one, which our side refuses with UNAUTHENTICATED and a
// message containing `refusal`.
void CheckInterop(const char* python_role,
                  absl::Status (*handshake)(int, std::string_view, const Deadline&),
                  const std::string& refusal) {
  std::string py = FindPython();
  if (py.empty()) GTEST_SKIP() << "python3 not installed: interop not checked";
  for (bool right_key : {true, false}) {
    SCOPED_TRACE(right_key ? "right key" : "wrong key");
    auto p = StreamSocketPair();
    PyRun r = StartPython(py, p.b.get(), python_role, "shared-key");
    p.b.Reset();
    absl::Status s = handshake(p.a.get(), right_key ? "shared-key" : "other-key",
                               Deadline::After(absl::Seconds(60)));
    if (right_key) {
      MPROC_EXPECT_OK(s);
      EXPECT_THAT(ReadCPythonMessage(p.a.get(), 256, Deadline::After(absl::Seconds(60))),
                  IsOkAndHolds(std::string("python-ok")));
    } else {
      EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr(refusal)));
    }
    p.a.Reset();
    std::string out = Finish(r);
    EXPECT_THAT(out, HasSubstr(right_key ? "OK" : "AUTHFAIL")) << out;
  }
}

TEST(AuthInteropTest, PythonClientAgainstMprocServer) {
  CheckInterop("client", ServerHandshake, "");
}

TEST(AuthInteropTest, MprocClientAgainstPythonServer) {
  CheckInterop("server", ClientHandshake, "rejected");
}

}  // namespace
}  // namespace mproc
