#include "ipc/listener.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

// Unique to this test process. Not its pid: every test binary runs in its own PID namespace
// (so all have the same pid), while /tmp and the abstract socket namespace are shared by the
// suites running at once (this file runs once per I/O mode, in parallel).
const std::string& ProcessTag() {
  static const std::string tag = [] {
    std::random_device rd;
    return absl::StrCat(absl::Hex(rd(), absl::kZeroPad8), absl::Hex(rd(), absl::kZeroPad8));
  }();
  return tag;
}

std::string TempSocketPath(const std::string& tag) {
  // sockaddr_un holds 107 bytes; test sandboxes' TMPDIRs can be longer.
  return absl::StrCat("/tmp/mproc-ltest-", ProcessTag(), "-", tag);
}

std::string RandomName(const std::string& tag) {
  return absl::StrCat("mproc-test-", ProcessTag(), "-", tag);
}

// Accepts in a thread and echoes one message; the client side runs in the test.
void EchoOnce(Listener& l, absl::Status* accept_status) {
  absl::StatusOr<Connection> c = l.Accept(absl::Seconds(30));
  *accept_status = c.status();
  if (!c.ok()) return;
  absl::StatusOr<std::string> m = c->RecvBytes();
  if (m.ok()) (void)c->SendBytes("echo: " + *m);
}

class ListenerFamilyTest : public ::testing::TestWithParam<Address::Family> {
 protected:
  Address MakeAddress() {
    switch (GetParam()) {
      case Address::Family::kUnix: return Address::Unix(TempSocketPath("fam"));
      case Address::Family::kAbstract: return Address::Abstract(RandomName("fam"));
      case Address::Family::kTcp: return Address::Tcp("127.0.0.1", 0);
    }
    return {};
  }
};

TEST_P(ListenerFamilyTest, ClientTalksToListenerWithAndWithoutKeys) {
  for (std::optional<std::string> key : {std::optional<std::string>(), std::optional<std::string>("secret"),
                                         std::optional<std::string>("")}) {
    ASSERT_OK_AND_ASSIGN(Listener l, Listener::Create(MakeAddress(), key));
    absl::Status accepted;
    std::thread server([&] { EchoOnce(l, &accepted); });
    ASSERT_OK_AND_ASSIGN(Connection c, Client(l.address(), key));
    MPROC_ASSERT_OK(c.SendBytes("ping"));
    ASSERT_OK_AND_ASSIGN(std::string reply, c.RecvBytes());
    server.join();
    MPROC_EXPECT_OK(accepted);
    EXPECT_EQ(reply, "echo: ping");
  }
}

TEST_P(ListenerFamilyTest, WrongKeyFailsOnBothSidesBeforeAnyData) {
  ASSERT_OK_AND_ASSIGN(Listener l, Listener::Create(MakeAddress(), std::string("right")));
  absl::Status accepted;
  std::thread server([&] { EchoOnce(l, &accepted); });
  absl::StatusOr<Connection> c = Client(l.address(), std::string("wrong"));
  server.join();
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("rejected")));
  EXPECT_THAT(accepted, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("wrong")));
}

TEST_P(ListenerFamilyTest, SecondBindToTheSameAddressFails) {
  ASSERT_OK_AND_ASSIGN(Listener l, Listener::Create(MakeAddress()));
  absl::StatusOr<Listener> again = Listener::Create(l.address());
  EXPECT_FALSE(again.ok());
  if (GetParam() != Address::Family::kTcp) {
    EXPECT_THAT(again, StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("in use")));
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ListenerFamilyTest,
                         ::testing::Values(Address::Family::kUnix, Address::Family::kAbstract,
                                           Address::Family::kTcp),
                         [](const auto& info) {
                           switch (info.param) {
                             case Address::Family::kUnix: return std::string("unix");
                             case Address::Family::kAbstract: return std::string("abstract");
                             case Address::Family::kTcp: return std::string("tcp");
                           }
                           return std::string("x");
                         });

TEST(ListenerTest, CloseRemovesTheSocketFileAndStopsAccepting) {
  std::string path = TempSocketPath("close");
  ASSERT_OK_AND_ASSIGN(Listener l, Listener::Create(Address::Unix(path)));
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  l.Close();
  EXPECT_NE(::stat(path.c_str(), &st), 0);
  EXPECT_THAT(l.Accept(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("listener is closed")));
  EXPECT_FALSE(Client(Address::Unix(path)).ok());
}

TEST(ListenerTest, AcceptTimesOutAndLateAcceptStillGetsTheData) {
  ASSERT_OK_AND_ASSIGN(Listener l, Listener::Create(Address::Abstract(RandomName("late"))));
  EXPECT_THAT(l.Accept(absl::Milliseconds(50)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  {
    ASSERT_OK_AND_ASSIGN(Connection c, Client(l.address()));
    MPROC_ASSERT_OK(c.SendBytes("sent before accept, then closed"));
  }
  ASSERT_OK_AND_ASSIGN(Connection s, l.Accept(absl::Seconds(5)));
  ASSERT_OK_AND_ASSIGN(std::string m, s.RecvBytes());
  EXPECT_EQ(m, "sent before accept, then closed");
}

// A raw client that connects and never speaks.
UniqueFd SilentClient(const Address& a) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  un.sun_path[0] = '\0';
  std::memcpy(un.sun_path + 1, a.path.data(), a.path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + a.path.size());
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&un), len), 0);
  return fd;
}

// Twenty clients connect and never speak; then a real one connects. Accept returns the real
// one at once: handshakes run side by side, so no silent client delays another (before, each
// held Accept for the whole timeout, 90 s behind 20 of them, or forever without one).
TEST(ListenerTest, SilentClientsDoNotHoldUpOthers) {
  ASSERT_OK_AND_ASSIGN(Listener l,
                       Listener::Create(Address::Abstract(RandomName("silent")), "key", 64));
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 20; ++i) silent.push_back(SilentClient(l.address()));
  absl::Status client_status = absl::UnknownError("not run");
  std::thread client([&] {
    absl::StatusOr<Connection> c = Client(l.address(), "key", absl::Seconds(30));
    client_status = c.status();
    if (c.ok()) (void)c->SendBytes("the real client");
  });
  const double t0 = testing::NowSeconds();
  ASSERT_OK_AND_ASSIGN(Connection s, l.Accept(absl::Seconds(30)));
  EXPECT_LT(testing::NowSeconds() - t0, 5.0);  // not the silent clients' handshake timeout
  EXPECT_THAT(s.RecvBytes(std::nullopt, absl::Seconds(10)), IsOkAndHolds("the real client"));
  client.join();
  MPROC_EXPECT_OK(client_status);
}

// A silent client is dropped once its handshake timeout passes: it sees end of file, and no
// Accept fails because of it.
TEST(ListenerTest, ASilentClientIsDroppedAfterItsHandshakeTimeout) {
  ASSERT_OK_AND_ASSIGN(Listener l, Listener::Create(Address::Abstract(RandomName("drop")), "key"));
  l.SetHandshakeTimeout(absl::Milliseconds(100));
  UniqueFd silent = SilentClient(l.address());
  EXPECT_THAT(l.Accept(absl::Milliseconds(400)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  // It got our challenge, then end of file: drain both.
  char buf[256];
  ssize_t n;
  size_t total = 0;
  while ((n = ::read(silent.get(), buf, sizeof(buf))) > 0) total += static_cast<size_t>(n);
  EXPECT_EQ(n, 0);  // end of file, not a read that blocks
  EXPECT_GT(total, 0u);
}

// A client with the wrong key fails its own Accept (UNAUTHENTICATED, as CPython's
// AuthenticationError) while a good client that came later is served by the next.
TEST(ListenerTest, AWrongKeyFailsOneAcceptAndTheNextServesTheGoodClient) {
  ASSERT_OK_AND_ASSIGN(Listener l, Listener::Create(Address::Abstract(RandomName("mixed")), "key"));
  std::thread bad([&] { EXPECT_FALSE(Client(l.address(), "wrong", absl::Seconds(30)).ok()); });
  absl::StatusOr<Connection> first = l.Accept(absl::Seconds(30));
  EXPECT_THAT(first.status(), StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("wrong")));
  bad.join();
  std::thread good([&] {
    absl::StatusOr<Connection> c = Client(l.address(), "key", absl::Seconds(30));
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) (void)c->SendBytes("good");
  });
  ASSERT_OK_AND_ASSIGN(Connection s, l.Accept(absl::Seconds(30)));
  EXPECT_THAT(s.RecvBytes(std::nullopt, absl::Seconds(10)), IsOkAndHolds("good"));
  good.join();
}

TEST(ListenerTest, BadAddressesAreInvalidArgument) {
  EXPECT_THAT(Listener::Create(Address::Tcp("localhost-ish", 0)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Listener::Create(Address::Unix(std::string(200, 'a'))),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Client(Address::Unix("/nonexistent/mproc.sock")), StatusIs(absl::StatusCode::kNotFound));
}

// ---- interop with python3's multiprocessing.connection, at the bytes level

constexpr char kPythonClient[] = R"PY(
import sys
from multiprocessing.connection import Client
addr, key = sys.argv[1], sys.argv[2].encode()
try:
    c = Client(addr, authkey=key)
except Exception as e:
    print(type(e).__name__ + ": " + str(e), flush=True)
    sys.exit(3)
c.send_bytes(b"hello from python")
print(c.recv_bytes().decode(), flush=True)
c.close()
)PY";

constexpr char kPythonListener[] = R"PY(
import sys
from multiprocessing.connection import Listener
addr, key = sys.argv[1], sys.argv[2].encode()
l = Listener(addr, authkey=key)
print("ready", flush=True)
try:
    c = l.accept()
except Exception as e:
    print(type(e).__name__ + ": " + str(e), flush=True)
    sys.exit(3)
m = c.recv_bytes()
c.send_bytes(m.upper())
c.close()
l.close()
)PY";

bool HavePython() { return ::access("/usr/bin/python3", X_OK) == 0; }

// Runs python3 -c script args...; returns its pid and a pipe carrying its stdout.
pid_t StartPython(const char* script, const std::string& a1, const std::string& a2, int* out_fd) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  const pid_t pid = SpawnProgram({"/usr/bin/python3", "-c", script, a1, a2}, {.out = p[1]});
  ::close(p[1]);
  *out_fd = p[0];
  return pid;
}

std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

TEST(PythonInteropTest, PythonClientAgainstMprocListener) {
  if (!HavePython()) GTEST_SKIP() << "python3 is not installed";
  std::string path = TempSocketPath("pyclient");
  ASSERT_OK_AND_ASSIGN(Listener l, Listener::Create(Address::Unix(path), std::string("k3y")));
  int out;
  pid_t py = StartPython(kPythonClient, path, "k3y", &out);
  ASSERT_GT(py, 0);
  ASSERT_OK_AND_ASSIGN(Connection c, l.Accept(absl::Seconds(30)));
  ASSERT_OK_AND_ASSIGN(std::string m, c.RecvBytes());
  EXPECT_EQ(m, "hello from python");
  MPROC_ASSERT_OK(c.SendBytes("hello from mproc"));
  EXPECT_EQ(ReadLine(out), "hello from mproc");
  ::close(out);
  EXPECT_EQ(testing::Join(py, 60), 0);

  // Wrong key: UNAUTHENTICATED here, AuthenticationError there, no data either way.
  pid_t bad = StartPython(kPythonClient, path, "not-the-key", &out);
  EXPECT_THAT(l.Accept(absl::Seconds(30)), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(ReadLine(out), HasSubstr("AuthenticationError"));
  ::close(out);
  EXPECT_EQ(testing::Join(bad, 60), 3);
}

TEST(PythonInteropTest, MprocClientAgainstPythonListener) {
  if (!HavePython()) GTEST_SKIP() << "python3 is not installed";
  std::string path = TempSocketPath("pylistener");
  int out;
  pid_t py = StartPython(kPythonListener, path, "k3y", &out);
  ASSERT_EQ(ReadLine(out), "ready");
  {
    ASSERT_OK_AND_ASSIGN(Connection c, Client(Address::Unix(path), std::string("k3y")));
    MPROC_ASSERT_OK(c.SendBytes("shout this"));
    ASSERT_OK_AND_ASSIGN(std::string m, c.RecvBytes());
    EXPECT_EQ(m, "SHOUT THIS");
  }
  ::close(out);
  EXPECT_EQ(testing::Join(py, 60), 0);

  std::string path2 = TempSocketPath("pylistener2");
  pid_t py2 = StartPython(kPythonListener, path2, "k3y", &out);
  ASSERT_EQ(ReadLine(out), "ready");
  EXPECT_THAT(Client(Address::Unix(path2), std::string("wrong")),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(ReadLine(out), HasSubstr("AuthenticationError"));
  ::close(out);
  EXPECT_EQ(testing::Join(py2, 60), 3);
}

}  // namespace
}  // namespace mproc
