// Manager and its proxies against real server processes, under every start method: the
// containers' semantics, proxies passed to children and through a Queue, leases that return the
// object count to zero whoever dies, a killed or shut-down manager, a restarted one, and
// hostile clients.
#include "manager/manager.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <map>
#include <stdexcept>
#include <string>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "base/io_ring.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/queue.h"

namespace mproc {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

class ManagerTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
  std::unique_ptr<Manager> Start() {
    ManagerOptions o;
    o.start_method = GetParam();
    absl::StatusOr<std::unique_ptr<Manager>> m = Manager::Start(o);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *std::move(m) : nullptr;
  }
  // Starts every process with this test's start method; each must exit 0.
  void RunAll(std::vector<Process>& ps) {
    for (Process& p : ps) {
      p.SetStartMethod(GetParam());
      MPROC_ASSERT_OK(p.Start());
    }
    for (Process& p : ps) {
      MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
      EXPECT_EQ(p.exitcode(), 0);
    }
  }
  // Waits (bounded) for the server's object count to reach `n`: references held by processes
  // that ended are dropped when the server sees their connections close.
  static void ExpectCountReaches(Manager& m, uint64_t n) {
    absl::StatusOr<uint64_t> c = m.ObjectCount();
    for (int i = 0; i < 2000 && c.ok() && *c != n; ++i) {
      ::usleep(5000);
      c = m.ObjectCount();
    }
    EXPECT_THAT(c, IsOkAndHolds(n));
  }
};

// ---- targets run in children

int FillFromChild(DictProxy<std::string, int> d, ListProxy<int> l, NamespaceProxy ns,
                  int32_t base) {
  for (int i = 0; i < 5; ++i) {
    if (!d.Set("k" + std::to_string(i), base + i).ok()) return 2;
    if (!l.Append(base + i).ok()) return 3;
  }
  if (!ns.Set("who", std::string("child")).ok()) return 4;
  return 0;
}

int ClaimAndWait(DictProxy<std::string, int> d, Connection ready) {
  if (!d.Set("claimed", 1).ok()) return 2;
  (void)ready.SendBytes("ok");
  for (;;) ::pause();
}

int UseFromQueue(Queue<DictProxy<std::string, int>> q) {
  absl::StatusOr<DictProxy<std::string, int>> d = q.Get(absl::Seconds(30));
  if (!d.ok()) return 2;
  return d->Set("via-queue", 7).ok() ? 0 : 3;
}

int StartManagerAndWait(Connection report, StartMethod method) {
  ManagerOptions o;
  o.start_method = method;
  absl::StatusOr<std::unique_ptr<Manager>> m = Manager::Start(o);
  if (!m.ok()) return 2;
  const int32_t pid = (*m)->pid();
  (void)report.SendBytes(std::string(reinterpret_cast<const char*>(&pid), sizeof(pid)) +
                         (*m)->address().path);
  for (;;) ::pause();
}

int PutLater(QueueProxy<int> q, int32_t v) {
  ::usleep(50'000);  // the test's Get is parked by then (its claim holds either way)
  return q.Put(v).ok() ? 0 : 2;
}

int HoldLockAndDie(LockProxy lock, Connection ready) {
  absl::StatusOr<AcquireResult> r = lock.Acquire();
  if (!r.ok() || !*r) return 2;
  (void)ready.SendBytes("held");
  for (;;) ::pause();
}

int TryLock(LockProxy lock) {
  absl::StatusOr<AcquireResult> r = lock.Acquire(absl::ZeroDuration());
  if (!r.ok()) return 2;
  return *r ? 1 : 0;  // 0: not acquired, as the parent holds it
}

int WaitForEvent(EventProxy e) {
  absl::StatusOr<bool> r = e.Wait(absl::Seconds(30));
  return r.ok() && *r ? 0 : 2;
}

// Waits on the condition until the namespace's "go" is set; returns 0 when notified in time.
int WaitOnCondition(ConditionProxy c, NamespaceProxy ns) {
  if (!c.Acquire().ok()) return 2;
  absl::StatusOr<bool> r = c.WaitFor([&] { return ns.Get<int>("go").value_or(0) == 1; },
                                     absl::Seconds(30));
  if (!c.Release().ok()) return 3;
  return r.ok() && *r ? 0 : 4;
}

int PassBarrier(BarrierProxy b, ListProxy<int64_t> indices) {
  absl::StatusOr<int64_t> i = b.Wait(absl::Seconds(30));
  if (!i.ok()) return 2;
  return indices.Append(*i).ok() ? 0 : 3;
}

int TaskDoneEach(JoinableQueueProxy<int> q, int32_t n) {
  for (int i = 0; i < n; ++i) {
    if (!q.Get(absl::Seconds(30)).ok() || !q.TaskDone().ok()) return 2;
  }
  return 0;
}

// ---- tests

// The server loop runs on io_uring unless the I/O mode was chosen plain (manager_test runs
// this suite with MPROC_IO_MODE=plain, manager_uring_test with uring_basic); asked for
// explicitly, a backend is what runs.
// Whether process `pid` has a descriptor (among its first 64) linked to `target`.
bool HasFdLinkedTo(pid_t pid, const std::string& target) {
  for (int fd = 0; fd < 64; ++fd) {
    char link[256];
    const std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
    if (n > 0 && std::string(link, static_cast<size_t>(n)) == target) return true;
  }
  return false;
}

TEST_P(ManagerTest, TheServerRunsTheBackendOfItsIoMode) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
  MPROC_ASSERT_OK(d.Set("k", 1));  // the loop is running
  const bool epoll = HasFdLinkedTo(m->pid(), "anon_inode:[eventpoll]");
  const bool uring = HasFdLinkedTo(m->pid(), "anon_inode:[io_uring]");
  if (ActiveIoMode() == IoMode::kPlain) {
    EXPECT_TRUE(epoll);
    EXPECT_FALSE(uring);
  } else {
    EXPECT_TRUE(uring);
    EXPECT_FALSE(epoll);
  }
  MPROC_ASSERT_OK(m->Shutdown());
  for (auto [backend, want] : {std::pair{ManagerOptions::Backend::kEpoll, "anon_inode:[eventpoll]"},
                               std::pair{ManagerOptions::Backend::kIoUring, "anon_inode:[io_uring]"}}) {
    ManagerOptions o;
    o.start_method = GetParam();
    o.backend = backend;
    ASSERT_OK_AND_ASSIGN(auto n, Manager::Start(o));
    ASSERT_OK_AND_ASSIGN(auto d2, (n->Dict<std::string, int>()));
    MPROC_ASSERT_OK(d2.Set("k", 2));
    EXPECT_TRUE(HasFdLinkedTo(n->pid(), want)) << want;
    MPROC_ASSERT_OK(n->Shutdown());
  }
}

TEST_P(ManagerTest, DictKeepsInsertionOrderAndPythonsErrors) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
  MPROC_ASSERT_OK(d.Set("b", 2));
  MPROC_ASSERT_OK(d.Set("a", 1));
  MPROC_ASSERT_OK(d.Set("c", 3));
  MPROC_ASSERT_OK(d.Set("b", 20));  // an update keeps its place
  EXPECT_THAT(d.Get("b"), IsOkAndHolds(20));
  EXPECT_THAT(d.Get("zz"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("KeyError")));
  EXPECT_THAT(d.Get("zz", 5), IsOkAndHolds(5));
  EXPECT_THAT(d.Keys(), IsOkAndHolds(ElementsAre("b", "a", "c")));
  EXPECT_THAT(d.Items(), IsOkAndHolds(ElementsAre(Pair("b", 20), Pair("a", 1), Pair("c", 3))));
  EXPECT_THAT(d.Contains("a"), IsOkAndHolds(true));
  MPROC_ASSERT_OK(d.Delete("a"));
  EXPECT_THAT(d.Delete("a"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(d.Contains("a"), IsOkAndHolds(false));
  EXPECT_THAT(d.Pop("c"), IsOkAndHolds(3));
  EXPECT_THAT(d.SetDefault("n", 9), IsOkAndHolds(9));
  EXPECT_THAT(d.SetDefault("n", 10), IsOkAndHolds(9));
  MPROC_ASSERT_OK(d.Update({{"x", 1}, {"b", 2}}));
  EXPECT_THAT(d.Items(), IsOkAndHolds(ElementsAre(Pair("b", 2), Pair("n", 9), Pair("x", 1))));
  EXPECT_THAT(d.Len(), IsOkAndHolds(3u));
  EXPECT_THAT(d.Values(), IsOkAndHolds(ElementsAre(2, 9, 1)));
  MPROC_ASSERT_OK(d.Clear());
  EXPECT_THAT(d.Len(), IsOkAndHolds(0u));
}

// A request or reply over the 256 MiB message limit is RESOURCE_EXHAUSTED for that call
// alone. Before, the server (for a request) or the client (for a reply) closed the
// connection, and every proxy of that manager in this process failed ABORTED "gone".
TEST(ManagerLimitTest, AnOversizedRequestOrReplyFailsThatCallAlone) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Manager> m, Manager::Start());
  {
    ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, std::string>()));
    const std::string hundred(100 << 20, 'h');
    for (const char* k : {"a", "b", "c"}) MPROC_ASSERT_OK(d.Set(k, hundred));
    EXPECT_THAT(d.Items(), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit")));
    EXPECT_THAT(d.Len(), IsOkAndHolds(3u));
    EXPECT_THAT(d.Set("big", std::string(300 << 20, 'b')),
                StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("nothing was sent")));
    EXPECT_THAT(d.Len(), IsOkAndHolds(3u));
    EXPECT_THAT(d.Keys(), IsOkAndHolds(ElementsAre("a", "b", "c")));
  }
  MPROC_EXPECT_OK(m->Shutdown());
  ShutdownForkServer();
}

TEST_P(ManagerTest, ListFollowsPythonsIndexingAndSlicing) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto l, m->List<int>());
  MPROC_ASSERT_OK(l.Extend({1, 2, 3, 4, 5}));
  MPROC_ASSERT_OK(l.Append(6));
  EXPECT_THAT(l.Get(0), IsOkAndHolds(1));
  EXPECT_THAT(l.Get(-1), IsOkAndHolds(6));
  EXPECT_THAT(l.Get(6), StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("IndexError")));
  EXPECT_THAT(l.Get(-7), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(l.Slice(1, 3), IsOkAndHolds(ElementsAre(2, 3)));
  EXPECT_THAT(l.Slice(-2, 100), IsOkAndHolds(ElementsAre(5, 6)));
  EXPECT_THAT(l.Slice(4, 2), IsOkAndHolds(ElementsAre()));
  MPROC_ASSERT_OK(l.Set(-1, 60));
  MPROC_ASSERT_OK(l.Insert(0, 0));
  MPROC_ASSERT_OK(l.Insert(100, 70));  // clamped to the end, as Python's insert
  EXPECT_THAT(l.ToVector(), IsOkAndHolds(ElementsAre(0, 1, 2, 3, 4, 5, 60, 70)));
  EXPECT_THAT(l.Pop(), IsOkAndHolds(70));
  EXPECT_THAT(l.Pop(0), IsOkAndHolds(0));
  MPROC_ASSERT_OK(l.Append(2));
  EXPECT_THAT(l.Count(2), IsOkAndHolds(2u));
  EXPECT_THAT(l.Index(2), IsOkAndHolds(1u));
  MPROC_ASSERT_OK(l.Remove(2));
  EXPECT_THAT(l.Remove(42), StatusIs(absl::StatusCode::kNotFound, HasSubstr("ValueError")));
  MPROC_ASSERT_OK(l.Reverse());
  EXPECT_THAT(l.ToVector(), IsOkAndHolds(ElementsAre(2, 60, 5, 4, 3, 1)));
  EXPECT_THAT(l.Len(), IsOkAndHolds(6u));
  MPROC_ASSERT_OK(l.Clear());
  EXPECT_THAT(l.Pop(), StatusIs(absl::StatusCode::kOutOfRange));
}

// Python's slice assignment and l *= n, and containers made with initial contents (seed
// 004's manager.dict({'processed': False, 'count': 0})).
TEST_P(ManagerTest, ListSliceAssignmentRepeatAndInitialContents) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto l, m->List<int>({1, 2, 3, 4}));
  MPROC_ASSERT_OK(l.SetSlice(1, 3, {20, 21, 22}));  // grows
  EXPECT_THAT(l.ToVector(), IsOkAndHolds(ElementsAre(1, 20, 21, 22, 4)));
  MPROC_ASSERT_OK(l.SetSlice(-2, 100, {}));  // deletes the tail
  EXPECT_THAT(l.ToVector(), IsOkAndHolds(ElementsAre(1, 20, 21)));
  MPROC_ASSERT_OK(l.SetSlice(3, 1, {9}));  // an empty slice: inserts at its start
  EXPECT_THAT(l.ToVector(), IsOkAndHolds(ElementsAre(1, 20, 21, 9)));
  MPROC_ASSERT_OK(l.Repeat(2));
  EXPECT_THAT(l.ToVector(), IsOkAndHolds(ElementsAre(1, 20, 21, 9, 1, 20, 21, 9)));
  EXPECT_THAT(l.Repeat(int64_t{1} << 40),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("MemoryError")));
  EXPECT_THAT(l.Len(), IsOkAndHolds(8u));  // the refused repeat changed nothing
  MPROC_ASSERT_OK(l.Repeat(0));
  EXPECT_THAT(l.Len(), IsOkAndHolds(0u));

  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>({{"processed", 0}, {"count", 0},
                                                           {"processed", 1}})));
  EXPECT_THAT(d.Items(), IsOkAndHolds(ElementsAre(Pair("processed", 1), Pair("count", 0))));
}

// CPython's Manager().Array: fixed size; and 3.14's Manager().set().
TEST_P(ManagerTest, ArrayKeepsItsSizeAndSetKeepsOneOfEach) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto a, m->Array<double>(size_t{4}));
  EXPECT_THAT(a.ToVector(), IsOkAndHolds(ElementsAre(0.0, 0.0, 0.0, 0.0)));
  MPROC_ASSERT_OK(a.Set(-1, 2.5));
  MPROC_ASSERT_OK(a.SetSlice(0, 2, {1.0, 1.5}));
  EXPECT_THAT(a.ToVector(), IsOkAndHolds(ElementsAre(1.0, 1.5, 0.0, 2.5)));
  EXPECT_THAT(a.SetSlice(0, 2, {7.0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keeps its size")));
  EXPECT_THAT(a.Get(4), StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("IndexError")));
  EXPECT_THAT(a.Slice(1, 3), IsOkAndHolds(ElementsAre(1.5, 0.0)));
  EXPECT_THAT(a.Len(), IsOkAndHolds(4u));

  ASSERT_OK_AND_ASSIGN(auto s, m->Set<std::string>({"a", "b", "a"}));
  EXPECT_THAT(s.Len(), IsOkAndHolds(2u));
  EXPECT_THAT(s.Add("c"), IsOkAndHolds(true));
  EXPECT_THAT(s.Add("a"), IsOkAndHolds(false));
  EXPECT_THAT(s.Contains("b"), IsOkAndHolds(true));
  EXPECT_THAT(s.Discard("b"), IsOkAndHolds(true));
  EXPECT_THAT(s.Discard("b"), IsOkAndHolds(false));
  EXPECT_THAT(s.Remove("b"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("KeyError")));
  MPROC_ASSERT_OK(s.Update({"d", "a"}));
  EXPECT_THAT(s.ToVector(), IsOkAndHolds(ElementsAre("a", "c", "d")));
  std::vector<std::string> popped;
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string v, s.Pop());
    popped.push_back(v);
  }
  std::sort(popped.begin(), popped.end());
  EXPECT_THAT(popped, ElementsAre("a", "c", "d"));
  EXPECT_THAT(s.Pop(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("empty set")));
}

// CPython's TestSyncManagerTypes: every type used from a child process.
int UseEveryType(ArrayProxy<int64_t> a, SetProxy<int> s, ListProxy<std::string> l,
                 DictProxy<int, std::string> d, ValueProxy<int64_t> v, NamespaceProxy ns) {
  if (!a.Set(0, 42).ok() || !s.Add(7).ok() || !l.Append("child").ok() ||
      !d.Set(1, "one").ok() || !v.Set(9).ok() || !ns.Set("seen", true).ok()) {
    return 2;
  }
  // An Array refuses the methods that would change its size.
  return a.Len().value_or(0) == 3 ? 0 : 3;
}

TEST_P(ManagerTest, EveryContainerTypeWorksFromAChild) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  {
    ASSERT_OK_AND_ASSIGN(auto a, m->Array<int64_t>({1, 2, 3}));
    ASSERT_OK_AND_ASSIGN(auto s, m->Set<int>());
    ASSERT_OK_AND_ASSIGN(auto l, m->List<std::string>());
    ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<int, std::string>()));
    ASSERT_OK_AND_ASSIGN(auto v, m->Value<int64_t>(0));
    ASSERT_OK_AND_ASSIGN(NamespaceProxy ns, m->Namespace());
    Process p(UseEveryType, a, s, l, d, v, ns);
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
    MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_THAT(a.ToVector(), IsOkAndHolds(ElementsAre(42, 2, 3)));
    EXPECT_THAT(s.ToVector(), IsOkAndHolds(ElementsAre(7)));
    EXPECT_THAT(l.ToVector(), IsOkAndHolds(ElementsAre("child")));
    EXPECT_THAT(d.Get(1), IsOkAndHolds("one"));
    EXPECT_THAT(v.Get(), IsOkAndHolds(9));
    EXPECT_THAT(ns.Get<bool>("seen"), IsOkAndHolds(true));
    EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(6u));
  }
  ExpectCountReaches(*m, 0);
}

TEST_P(ManagerTest, NamespaceAndValue) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(NamespaceProxy ns, m->Namespace());
  MPROC_ASSERT_OK(ns.Set("x", 10));
  MPROC_ASSERT_OK(ns.Set("name", std::string("mproc")));
  EXPECT_THAT(ns.Get<int>("x"), IsOkAndHolds(10));
  EXPECT_THAT(ns.Get<std::string>("name"), IsOkAndHolds("mproc"));
  EXPECT_THAT(ns.Get<int>("y"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("AttributeError")));
  EXPECT_THAT(ns.Names(), IsOkAndHolds(ElementsAre("name", "x")));
  MPROC_ASSERT_OK(ns.Delete("x"));
  EXPECT_THAT(ns.Names(), IsOkAndHolds(ElementsAre("name")));
  ASSERT_OK_AND_ASSIGN(auto v, m->Value<double>(2.5));
  EXPECT_THAT(v.Get(), IsOkAndHolds(2.5));
  MPROC_ASSERT_OK(v.Set(-1));
  EXPECT_THAT(v.Get(), IsOkAndHolds(-1.0));
}

// Proxies passed to a child as arguments (seed 000 and 004's pattern): its writes are seen
// here; once every proxy is gone the server holds nothing.
TEST_P(ManagerTest, ChildrenWriteThroughProxiesAndNothingIsLeft) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  {
    ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
    ASSERT_OK_AND_ASSIGN(auto l, m->List<int>());
    ASSERT_OK_AND_ASSIGN(NamespaceProxy ns, m->Namespace());
    std::vector<Process> ps;
    for (int32_t c = 0; c < 3; ++c) ps.emplace_back(FillFromChild, d, l, ns, c * 100);
    RunAll(ps);
    EXPECT_THAT(d.Len(), IsOkAndHolds(5u));
    ASSERT_OK_AND_ASSIGN(std::vector<int> all, l.ToVector());
    EXPECT_EQ(all.size(), 15u);
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all.front(), 0);
    EXPECT_EQ(all.back(), 204);
    EXPECT_THAT(ns.Get<std::string>("who"), IsOkAndHolds("child"));
    EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(3u));
  }
  ExpectCountReaches(*m, 0);
}

// A child SIGKILLed while it holds a reference: its connection closes, and its reference goes
// with it.
TEST_P(ManagerTest, AKilledClientsReferencesAreDropped) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto pipe, Pipe());
  Process p = [&] {
    absl::StatusOr<DictProxy<std::string, int>> d = m->Dict<std::string, int>();
    EXPECT_TRUE(d.ok());
    return Process(ClaimAndWait, *d, std::move(pipe.second));
  }();
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());  // the parent's own copy went with the Process's arguments
  ASSERT_THAT(pipe.first.RecvBytes(std::nullopt, absl::Seconds(60)), IsOkAndHolds("ok"));
  EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(1u));  // held by the child alone
  MPROC_ASSERT_OK(p.Kill());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(30)));
  ExpectCountReaches(*m, 0);
}

// A proxy put in a Queue by one process and taken by another: it holds a reference while in
// flight, so the sender may drop its own at once.
TEST_P(ManagerTest, AProxyTravelsThroughAQueue) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto q, (Queue<DictProxy<std::string, int>>::Create()));
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
  MPROC_ASSERT_OK(q.Put(d));
  Process p(UseFromQueue, q);
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_THAT(d.Get("via-queue"), IsOkAndHolds(7));
}

// A proxy read as another kind of proxy with the same element type (a List sent, read as a
// Set) is refused when it is decoded, not at its first call; the object lives on.
TEST_P(ManagerTest, AProxyReadAsAnotherKindIsRefused) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto list, m->List<int>(std::vector<int>{1, 2, 3}));
  EncodeBuffer b;
  Encode(list, b);
  EXPECT_THAT(Decode<SetProxy<int>>(b.bytes()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another kind of proxy")));
  EncodeBuffer again;
  Encode(list, again);
  ASSERT_OK_AND_ASSIGN(ListProxy<int> same, Decode<ListProxy<int>>(again.bytes()));
  EXPECT_THAT(same.Len(), IsOkAndHolds(3u));
}

// The manager SIGKILLed: the call in flight and every later one fail at once with ABORTED
// naming its pid and how it ended; never a hang, never a silent reconnect.
TEST_P(ManagerTest, AKilledManagerFailsEveryCallAtOnce) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
  MPROC_ASSERT_OK(d.Set("a", 1));
  const pid_t server = m->pid();
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  const double t0 = testing::NowSeconds();
  absl::Status s = d.Set("b", 2);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kAborted, HasSubstr(std::to_string(server))));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kAborted, HasSubstr("signal 9")));
  EXPECT_THAT(d.Get("a"), StatusIs(absl::StatusCode::kAborted));
  EXPECT_LT(testing::NowSeconds() - t0, 1.0);
}

TEST_P(ManagerTest, ShutdownIsIdempotentAndLaterCallsAreFailedPrecondition) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
  const std::string path = m->address().path;
  MPROC_ASSERT_OK(m->Shutdown());
  MPROC_ASSERT_OK(m->Shutdown());
  EXPECT_THAT(d.Set("a", 1), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("shut down")));
  EXPECT_THAT(m->List<int>(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_NE(::access(path.c_str(), F_OK), 0);  // the socket file is gone
}

// The process that started the manager is SIGKILLed: the server does not outlive it.
TEST_P(ManagerTest, TheServerEndsWithItsOwner) {
  ASSERT_OK_AND_ASSIGN(auto pipe, Pipe());
  pid_t owner = testing::Child([&] {
    return StartManagerAndWait(std::move(pipe.second), GetParam());
  });
  ASSERT_OK_AND_ASSIGN(std::string raw, pipe.first.RecvBytes(std::nullopt, absl::Seconds(60)));
  int32_t server = 0;
  ASSERT_GT(raw.size(), sizeof(server));
  std::memcpy(&server, raw.data(), sizeof(server));
  const std::string socket = raw.substr(sizeof(server));
  const std::string dir = socket.substr(0, socket.rfind('/'));
  EXPECT_EQ(::access(dir.c_str(), F_OK), 0);
  ::kill(owner, SIGKILL);
  EXPECT_EQ(testing::Join(owner), 128 + SIGKILL);
  const double t0 = testing::NowSeconds();
  char state = testing::TaskState(server);
  while (state != '?' && state != 'Z' && testing::NowSeconds() - t0 < 10) {
    ::usleep(2000);
    state = testing::TaskState(server);
  }
  EXPECT_TRUE(state == '?' || state == 'Z') << "the manager outlived its owner";
  if (state != '?' && state != 'Z') ::kill(server, SIGKILL);
  // It removed its socket and the private directory holding it on the way out.
  EXPECT_NE(::access(socket.c_str(), F_OK), 0);
  EXPECT_NE(::access(dir.c_str(), F_OK), 0);
}

// A manager restarted on the same address is another instance: a proxy of the first says so
// instead of reaching an object of the second.
TEST_P(ManagerTest, AProxyOfARestartedManagerSaysSo) {
  std::string dir = "/tmp/mproc-mtest-XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  ManagerOptions o;
  o.start_method = GetParam();
  o.address = Address::Unix(dir + "/m.sock");
  o.authkey = "restart-key";
  ASSERT_OK_AND_ASSIGN(auto first, Manager::Start(o));
  ASSERT_OK_AND_ASSIGN(auto d, (first->Dict<std::string, int>()));
  MPROC_ASSERT_OK(d.Set("a", 1));
  MPROC_ASSERT_OK(first->Shutdown());
  ASSERT_OK_AND_ASSIGN(auto second, Manager::Start(o));
  ASSERT_OK_AND_ASSIGN(auto d2, (second->Dict<std::string, int>()));
  MPROC_ASSERT_OK(d2.Set("a", 2));
  // The old proxy's process shut the first down: FAILED_PRECONDITION either way, and never
  // the second's object.
  EXPECT_THAT(d.Get("a"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(d2.Get("a"), IsOkAndHolds(2));
  MPROC_ASSERT_OK(second->Shutdown());
  ::rmdir(dir.c_str());
}

// Hostile clients: one that never speaks, one with the wrong key, one that claims a 4 GiB
// message after authenticating: each is refused or dropped, and everyone else is served.
TEST_P(ManagerTest, HostileClientsDoNotStopTheServer) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
  auto raw_connect = [&] {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, m->address().path.c_str(), m->address().path.size() + 1);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  };
  UniqueFd silent = raw_connect();
  EXPECT_THAT(Client(m->address(), "wrong key", absl::Seconds(10)).status(),
              StatusIs(absl::StatusCode::kUnauthenticated));
  {
    ASSERT_OK_AND_ASSIGN(Connection c, Client(m->address(), m->authkey(), absl::Seconds(10)));
    const unsigned char huge[] = {0x7f, 0xff, 0xff, 0xff};  // 2 GiB - 1 of request to come
    ASSERT_EQ(::write(c.fileno(), huge, 4), 4);
    EXPECT_THAT(c.RecvBytes(std::nullopt, absl::Seconds(10)).status(),
                StatusIs(absl::StatusCode::kOutOfRange));  // the server closed it
  }
  MPROC_EXPECT_OK(d.Set("still", 1));
  EXPECT_THAT(d.Get("still"), IsOkAndHolds(1));
}


// ---- the synchronisation types (CPython's WithManagerTest* classes)

TEST_P(ManagerTest, QueueBlocksInTheServerNotInAThread) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto q, m->Queue<int>(2));
  MPROC_ASSERT_OK(q.Put(1));
  MPROC_ASSERT_OK(q.PutNowait(2));
  EXPECT_THAT(q.Full(), IsOkAndHolds(true));
  EXPECT_THAT(q.PutNowait(3), StatusIs(absl::StatusCode::kResourceExhausted));
  const double t0 = testing::NowSeconds();
  EXPECT_THAT(q.Put(3, absl::Milliseconds(200)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(testing::NowSeconds() - t0, 0.19);
  EXPECT_THAT(q.Qsize(), IsOkAndHolds(2u));
  EXPECT_THAT(q.Get(), IsOkAndHolds(1));
  EXPECT_THAT(q.GetNowait(), IsOkAndHolds(2));
  EXPECT_THAT(q.GetNowait(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(q.Get(absl::Milliseconds(100)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(q.Empty(), IsOkAndHolds(true));
  // A Get parked in the server while this process's other threads go on calling, and an item
  // put by a child wakes it.
  absl::StatusOr<int> got = absl::UnknownError("not run");
  std::thread getter([&] { got = q.Get(absl::Seconds(30)); });
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<int, int>()));
  for (int i = 0; i < 50; ++i) MPROC_ASSERT_OK(d.Set(i, i));  // not held up by the Get
  Process p(PutLater, q, 42);
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  getter.join();
  EXPECT_THAT(got, IsOkAndHolds(42));
  MPROC_ASSERT_OK(p.Join(absl::Seconds(30)));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ManagerTest, JoinableQueueJoinWaitsForEveryTaskDone) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto q, m->JoinableQueue<int>());
  MPROC_ASSERT_OK(q.Join(absl::ZeroDuration()));  // nothing put
  for (int i = 0; i < 5; ++i) MPROC_ASSERT_OK(q.Put(i));
  EXPECT_THAT(q.Join(absl::Milliseconds(50)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  Process p(TaskDoneEach, q, 5);
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  MPROC_EXPECT_OK(q.Join(absl::Seconds(30)));
  MPROC_ASSERT_OK(p.Join(absl::Seconds(30)));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_THAT(q.TaskDone(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too many")));
}

TEST_P(ManagerTest, LocksAndAHolderThatDies) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(LockProxy lock, m->Lock());
  ASSERT_OK_AND_ASSIGN(AcquireResult r, lock.Acquire());
  EXPECT_TRUE(r);
  EXPECT_THAT(lock.Locked(), IsOkAndHolds(true));
  Process other(TryLock, lock);
  other.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(other.Start());
  MPROC_ASSERT_OK(other.Join(absl::Seconds(30)));
  EXPECT_EQ(other.exitcode(), 0);  // it could not take the held lock
  MPROC_ASSERT_OK(lock.Release());
  EXPECT_THAT(lock.Release(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("unlocked")));
  // RLock: recursive for its thread, not releasable by another.
  ASSERT_OK_AND_ASSIGN(LockProxy rlock, m->RLock());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(*rlock.Acquire());
  absl::Status foreign;
  std::thread([&] { foreign = rlock.Release(); }).join();
  EXPECT_THAT(foreign, StatusIs(absl::StatusCode::kFailedPrecondition));
  for (int i = 0; i < 3; ++i) MPROC_ASSERT_OK(rlock.Release());
  EXPECT_THAT(rlock.Locked(), IsOkAndHolds(false));
  // A child dies holding the lock: it is freed, and the next acquirer is told.
  ASSERT_OK_AND_ASSIGN(auto pipe, Pipe());
  Process holder(HoldLockAndDie, lock, std::move(pipe.second));
  holder.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(holder.Start());
  ASSERT_THAT(pipe.first.RecvBytes(std::nullopt, absl::Seconds(60)), IsOkAndHolds("held"));
  MPROC_ASSERT_OK(holder.Kill());
  MPROC_ASSERT_OK(holder.Join(absl::Seconds(30)));
  ASSERT_OK_AND_ASSIGN(AcquireResult after, lock.Acquire(absl::Seconds(30)));
  EXPECT_TRUE(after);
  EXPECT_TRUE(after.previous_owner_died());
  MPROC_ASSERT_OK(lock.Release());
}

TEST_P(ManagerTest, SemaphoresCountAndBoundedOnesRefuseOverRelease) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(SemaphoreProxy s, m->Semaphore(2));
  EXPECT_THAT(s.Acquire(), IsOkAndHolds(true));
  EXPECT_THAT(s.Acquire(), IsOkAndHolds(true));
  EXPECT_THAT(s.Acquire(absl::ZeroDuration()), IsOkAndHolds(false));
  EXPECT_THAT(s.Acquire(absl::Milliseconds(100)), IsOkAndHolds(false));
  MPROC_ASSERT_OK(s.Release(3));  // beyond the initial value: fine for a Semaphore
  EXPECT_THAT(s.GetValue(), IsOkAndHolds(3));
  ASSERT_OK_AND_ASSIGN(SemaphoreProxy b, m->BoundedSemaphore(1));
  EXPECT_THAT(b.Release(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too many")));
  EXPECT_THAT(b.Acquire(), IsOkAndHolds(true));
  MPROC_EXPECT_OK(b.Release());
}

TEST_P(ManagerTest, EventsWakeWaitersInOtherProcesses) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(EventProxy e, m->Event());
  EXPECT_THAT(e.IsSet(), IsOkAndHolds(false));
  EXPECT_THAT(e.Wait(absl::ZeroDuration()), IsOkAndHolds(false));
  EXPECT_THAT(e.Wait(absl::Milliseconds(100)), IsOkAndHolds(false));
  std::vector<Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(WaitForEvent, e);
  for (Process& p : ps) {
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
  }
  MPROC_ASSERT_OK(e.Set());
  for (Process& p : ps) {
    MPROC_ASSERT_OK(p.Join(absl::Seconds(30)));
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_THAT(e.Wait(), IsOkAndHolds(true));
  MPROC_ASSERT_OK(e.Clear());
  EXPECT_THAT(e.IsSet(), IsOkAndHolds(false));
}

TEST_P(ManagerTest, ConditionNotifiesWaitersInOtherProcesses) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(ConditionProxy c, m->Condition());
  ASSERT_OK_AND_ASSIGN(NamespaceProxy ns, m->Namespace());
  MPROC_ASSERT_OK(ns.Set("go", 0));
  // wait(timeout) without a notify: false, with the lock held again after.
  ASSERT_TRUE(*c.Acquire());
  EXPECT_THAT(c.Wait(absl::Milliseconds(100)), IsOkAndHolds(false));
  EXPECT_THAT(c.lock().Locked(), IsOkAndHolds(true));
  MPROC_ASSERT_OK(c.Release());
  EXPECT_THAT(c.Wait(absl::ZeroDuration()), StatusIs(absl::StatusCode::kFailedPrecondition));
  std::vector<Process> ps;
  for (int i = 0; i < 2; ++i) ps.emplace_back(WaitOnCondition, c, ns);
  for (Process& p : ps) {
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
  }
  ASSERT_TRUE(*c.Acquire());
  MPROC_ASSERT_OK(ns.Set("go", 1));
  MPROC_ASSERT_OK(c.NotifyAll());
  MPROC_ASSERT_OK(c.Release());
  for (Process& p : ps) {
    MPROC_ASSERT_OK(p.Join(absl::Seconds(30)));
    EXPECT_EQ(p.exitcode(), 0);
  }
}

// A Wait that times out while another thread holds the lock for long (here past the client's
// 10 s allowance on top of the timeout) still returns only once it has the lock back, as
// Python's does: it used to give up with DEADLINE_EXCEEDED, and the server then handed the
// lock to a caller that had gone, so nobody could take it again.
void InitSlowly() { ::sleep(32); }

// An initializer that runs longer than a connection's 30 s handshake: Start waits for it, as
// CPython's does; it used to fail with UNAUTHENTICATED and stop the server.
TEST(ManagerSlowInitializerTest, StartWaitsForAnInitializerLongerThanTheHandshake) {
  if (ActiveIoMode() != IoMode::kPlain) GTEST_SKIP() << "slow; about start-up, not I/O modes";
  {
    ManagerOptions o;
    o.start_method = StartMethod::kFork;
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Manager> m, Manager::Start(o, InitSlowly));
    ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int>()));
    MPROC_ASSERT_OK(d.Set("served", 1));
    EXPECT_THAT(d.Get("served"), IsOkAndHolds(1));
  }
}

class ManagerConditionTest : public ::testing::Test {
 protected:
  void TearDown() override { ShutdownForkServer(); }
};

TEST_F(ManagerConditionTest, ATimedOutWaitReturnsHoldingTheLockHoweverLongThatTakes) {
  if (ActiveIoMode() != IoMode::kPlain) GTEST_SKIP() << "slow; about locks, not I/O modes";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Manager> m, Manager::Start());
  ASSERT_OK_AND_ASSIGN(LockProxy lock, m->Lock());
  ASSERT_OK_AND_ASSIGN(ConditionProxy c, m->Condition(lock));
  ASSERT_TRUE(*c.Acquire());
  std::atomic<bool> holding{false};
  std::thread other([&] {
    if (!lock.Acquire().ok()) return;  // granted when the Wait below releases it
    holding = true;
    ::usleep(10'700'000);
    (void)lock.Release();
  });
  EXPECT_THAT(c.Wait(absl::Milliseconds(100)), IsOkAndHolds(false));
  EXPECT_TRUE(holding.load());  // the other thread had it meanwhile
  MPROC_EXPECT_OK(c.Release());  // ours again
  other.join();
  ASSERT_OK_AND_ASSIGN(AcquireResult again, lock.Acquire(absl::Seconds(5)));
  EXPECT_TRUE(again);  // free: nobody was left holding it
  MPROC_EXPECT_OK(lock.Release());
}

TEST_P(ManagerTest, BarrierPassesEveryPartyAndBreaks) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(BarrierProxy b, m->Barrier(3));
  ASSERT_OK_AND_ASSIGN(auto indices, m->List<int64_t>());
  std::vector<Process> ps;
  for (int i = 0; i < 2; ++i) ps.emplace_back(PassBarrier, b, indices);
  for (Process& p : ps) {
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
  }
  ASSERT_OK_AND_ASSIGN(int64_t mine, b.Wait(absl::Seconds(30)));
  MPROC_ASSERT_OK(indices.Append(mine));
  for (Process& p : ps) {
    MPROC_ASSERT_OK(p.Join(absl::Seconds(30)));
    EXPECT_EQ(p.exitcode(), 0);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> all, indices.ToVector());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<int64_t>{0, 1, 2}));  // exactly one party gets 0
  EXPECT_THAT(b.Parties(), IsOkAndHolds(3));
  EXPECT_THAT(b.NWaiting(), IsOkAndHolds(0));
  // A timeout breaks it for everyone until Reset.
  EXPECT_THAT(b.Wait(absl::Milliseconds(100)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("BrokenBarrier")));
  EXPECT_THAT(b.Broken(), IsOkAndHolds(true));
  EXPECT_THAT(b.Wait(), StatusIs(absl::StatusCode::kFailedPrecondition));
  MPROC_ASSERT_OK(b.Reset());
  EXPECT_THAT(b.Broken(), IsOkAndHolds(false));
  MPROC_ASSERT_OK(b.Abort());
  EXPECT_THAT(b.Wait(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// A manager served by another program (here: a child running Serve on TCP at 127.0.0.1),
// reached with Connect and the key (CPython's _TestRemoteManager): proxies work there and in a
// child of ours; a wrong key is refused; the connected Manager's end leaves the server serving;
// the server's death fails calls at once.
int ServeOnTcp(Connection report) {
  absl::Status s = Manager::Serve(Address::Tcp("127.0.0.1", 0), "remote key",
                                  [&](const Address& bound) {
                                    const uint16_t port = bound.port;
                                    (void)report.SendBytes(std::string(
                                        reinterpret_cast<const char*>(&port), sizeof(port)));
                                  });
  return s.ok() ? 0 : 2;
}

int AppendRemote(ListProxy<std::string> l) { return l.Append("from a child").ok() ? 0 : 2; }

// Serve ends when a stop is requested from another thread: before, only a client's shutdown
// message (which no mproc call sends) ended it, so the process had to be killed, leaving its
// socket file behind. The stop ends it as a Shutdown does: the file is removed, and a
// client's later calls fail. A stop requested before Serve starts ends it at once.
TEST(ManagerServeTest, AStopRequestEndsServeAndRemovesItsSocket) {
  std::string dir = "/tmp/mproc-mtest-XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  const Address address = Address::Unix(dir + "/m.sock");
  std::stop_source stop;
  std::atomic<bool> listening{false};
  std::atomic<bool> returned{false};
  absl::Status served = absl::UnknownError("not returned");
  std::thread server([&] {
    served = Manager::Serve(address, "serve key", [&](const Address&) { listening = true; },
                            stop.get_token());
    returned = true;
  });
  for (int i = 0; i < 30000 && !listening.load(); ++i) ::usleep(1000);
  ASSERT_TRUE(listening.load());
  {
    ASSERT_OK_AND_ASSIGN(auto m, Manager::Connect(address, "serve key"));
    ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<int, int>()));
    MPROC_ASSERT_OK(d.Set(1, 2));
    EXPECT_THAT(d.Get(1), IsOkAndHolds(2));
    stop.request_stop();
    for (int i = 0; i < 30000 && !returned.load(); ++i) ::usleep(1000);
    EXPECT_TRUE(returned.load()) << "Serve did not return within 30 s of the stop request";
    server.join();
    MPROC_EXPECT_OK(served);
    EXPECT_NE(::access((dir + "/m.sock").c_str(), F_OK), 0) << "the socket file was left";
    EXPECT_THAT(d.Get(1), StatusIs(absl::StatusCode::kAborted));
  }
  EXPECT_THAT(Manager::Connect(address, "serve key").status(),
              StatusIs(absl::StatusCode::kUnavailable));
  std::stop_source early;
  early.request_stop();
  MPROC_EXPECT_OK(Manager::Serve(address, "serve key", nullptr, early.get_token()));
  EXPECT_NE(::access((dir + "/m.sock").c_str(), F_OK), 0);
  ::rmdir(dir.c_str());
}

TEST_P(ManagerTest, RemoteManagerOverTcp) {
  ASSERT_OK_AND_ASSIGN(auto pipe, Pipe());
  pid_t server = testing::Child([&] { return ServeOnTcp(std::move(pipe.second)); });
  ASSERT_OK_AND_ASSIGN(std::string raw, pipe.first.RecvBytes(std::nullopt, absl::Seconds(60)));
  uint16_t port = 0;
  ASSERT_EQ(raw.size(), sizeof(port));
  std::memcpy(&port, raw.data(), sizeof(port));
  const Address address = Address::Tcp("127.0.0.1", port);
  EXPECT_THAT(Manager::Connect(address, "wrong key").status(),
              StatusIs(absl::StatusCode::kUnauthenticated));
  {
    ASSERT_OK_AND_ASSIGN(auto m, Manager::Connect(address, "remote key"));
    EXPECT_EQ(m->pid(), server);
    ASSERT_OK_AND_ASSIGN(auto l, m->List<std::string>());
    MPROC_ASSERT_OK(l.Append("from the parent"));
    Process p(AppendRemote, l);
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
    MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_THAT(l.ToVector(), IsOkAndHolds(ElementsAre("from the parent", "from a child")));
    MPROC_ASSERT_OK(m->Shutdown());  // ours ends; the server serves on
  }
  ASSERT_OK_AND_ASSIGN(auto again, Manager::Connect(address, "remote key"));
  ASSERT_OK_AND_ASSIGN(auto d, (again->Dict<int, int>()));
  MPROC_ASSERT_OK(d.Set(1, 1));
  ::kill(server, SIGKILL);
  EXPECT_EQ(testing::Join(server), 128 + SIGKILL);
  EXPECT_THAT(d.Get(1), StatusIs(absl::StatusCode::kAborted, HasSubstr(std::to_string(server))));
  EXPECT_THAT(Manager::Connect(address, "remote key").status(),
              StatusIs(absl::StatusCode::kUnavailable));
}

// Objects of the user's own types (CPython's _TestMyManager: register, exposed methods,
// method_to_typeid): made in the server from constructor arguments, methods run there one at a
// time, a method that returns Managed<U> hands back a proxy to a new server object, an
// exception comes back as ABORTED, and children use the same object.
struct Tally {
  Tally(std::string n, int64_t start) : name(std::move(n)), total(start) {}
  std::string name;
  int64_t total;
  std::vector<int64_t> seen;
};
int64_t AddTo(Tally& t, int64_t by) {
  t.seen.push_back(by);
  return t.total += by;
}
std::string NameOf(Tally& t) { return t.name; }
int64_t Explode(Tally&) { throw std::runtime_error("tally exploded"); }
struct Page {
  std::vector<int64_t> items;
};
Managed<Page> Snapshot(Tally& t) { return Managed<Page>{Page{t.seen}}; }
size_t PageSize(Page& p) { return p.items.size(); }

int AddFromChild(ObjectProxy<Tally> t, int32_t times) {
  for (int i = 0; i < times; ++i) {
    if (!t.Call(AddTo, int64_t{1}).ok()) return 2;
  }
  return 0;
}

// Registered by name at namespace scope, so every image of this test binary (the server's
// too) has them.
struct Meter {
  explicit Meter(int64_t start) : n(start) {}
  int64_t n;
  std::string last;
};
int64_t MeterAdd(Meter& t, int64_t by) { return t.n += by; }
std::string MeterNote(Meter& t, std::string s) {
  t.last = s;
  return t.last + "!";
}
void MeterReset(Meter& t) { t.n = 0; }
const bool kMeterRegistered = RegisterType<Meter, int64_t>("Tally") &&
                              RegisterMethod("Tally", "add", MeterAdd) &&
                              RegisterMethod("Tally", "note", MeterNote) &&
                              RegisterMethod("Tally", "reset", MeterReset);

int MeterAddFromChild(NamedObjectProxy t) { return t.Call<int64_t>("add", int64_t{1000}).ok() ? 0 : 1; }

TEST_P(ManagerTest, ObjectsRegisteredByNameAreMadeAndCalledByName) {
  ASSERT_TRUE(kMeterRegistered);
  EXPECT_FALSE((RegisterType<Meter, int64_t>("Tally")));  // a name is registered once
  EXPECT_FALSE(RegisterMethod("NoSuchType", "add", MeterAdd));
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(NamedObjectProxy t, m->Create("Tally", int64_t{10}));
  EXPECT_THAT(t.Call<int64_t>("add", int64_t{5}), IsOkAndHolds(15));
  EXPECT_THAT(t.Call<std::string>("note", std::string("hi")), IsOkAndHolds("hi!"));
  MPROC_EXPECT_OK(t.Call<void>("reset").status());
  EXPECT_THAT(t.Call<int64_t>("add", int64_t{1}), IsOkAndHolds(1));
  // Clear errors for what the server does not have, or arguments of other types.
  EXPECT_THAT(m->Create("NoSuchType").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"NoSuchType\"")));
  EXPECT_THAT(t.Call<int64_t>("subtract", int64_t{1}).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("\"subtract\"")));
  EXPECT_THAT(t.Call<int64_t>("add", std::string("five")).status(),
              StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(t.Call<int64_t>("add", int64_t{1}, int64_t{2}).status(),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("more arguments")));
  // A descriptor means nothing in the server's process: refused here, with nothing sent, and
  // the connection goes on serving.
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(fd.ok());
  EXPECT_THAT(t.Call<int64_t>("add", std::move(fd)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("carry descriptors"), HasSubstr("nothing was sent"))));
  EXPECT_THAT(t.Call<int64_t>("add", int64_t{0}), IsOkAndHolds(1));
  // A proxy made by name passes to a child as any other.
  Process p(MeterAddFromChild, t);
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_THAT(t.Call<int64_t>("add", int64_t{0}), IsOkAndHolds(1001));
  // A client built from other sources (another build id) makes and calls them too.
  ASSERT_EQ(m->address().family, Address::Family::kUnix);
  const testing::ProgramOutcome client = testing::RunProgram(
      {testing::Runfile("manager/named_client"), m->address().path,
       absl::BytesToHexString(m->authkey())},
      ::testing::TempDir());
  EXPECT_EQ(client.exit_code, 0) << client.out << client.err;
  EXPECT_EQ(client.out, "123 from another binary! NOT_FOUND\n") << client.err;
}

TEST_P(ManagerTest, ObjectsOfYourOwnTypesRunTheirMethodsInTheServer) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(ObjectProxy<Tally> t, m->Make<Tally>(std::string("visits"), int64_t{100}));
  EXPECT_THAT(t.Call(NameOf), IsOkAndHolds("visits"));
  EXPECT_THAT(t.Call(AddTo, int64_t{5}), IsOkAndHolds(105));
  std::vector<Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(AddFromChild, t, 10);
  RunAll(ps);
  EXPECT_THAT(t.Call(AddTo, int64_t{0}), IsOkAndHolds(135));  // every call atomic
  EXPECT_THAT(t.Call(Explode),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("tally exploded")));
  ASSERT_OK_AND_ASSIGN(ObjectProxy<Page> page, t.Call(Snapshot));
  EXPECT_THAT(page.Call(PageSize), IsOkAndHolds(32u));
  EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(2u));
}

// Seed 004's "Shared State with Manager" (`shared_data['visits'] += 1` from 10 processes),
// which loses increments in CPython, written race-free: Update runs the increment in the
// server; CompareAndSet loops do the same without code in the server.
int Visit(DictProxy<std::string, int64_t> d, ValueProxy<int64_t> v, int32_t times) {
  for (int i = 0; i < times; ++i) {
    if (!d.Update("visits", [](int64_t& n) { return ++n; }).ok()) return 2;
    if (!v.Update([](int64_t& n, int64_t by) { n += by; }, int64_t{2}).ok()) return 3;
    // A compare-and-set loop: re-read on a lost race.
    for (;;) {
      absl::StatusOr<int64_t> now = d.Get("cas");
      if (!now.ok()) return 4;
      absl::StatusOr<bool> stored = d.CompareAndSet("cas", *now, *now + 1);
      if (!stored.ok()) return 5;
      if (*stored) break;
    }
  }
  return 0;
}

TEST_P(ManagerTest, UpdateAndCompareAndSetLoseNoIncrement) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, int64_t>()));
  ASSERT_OK_AND_ASSIGN(auto v, m->Value<int64_t>(0));
  MPROC_ASSERT_OK(d.Set("visits", 0));
  EXPECT_THAT(d.CompareAndSet("cas", std::nullopt, 0), IsOkAndHolds(true));  // absent: stored
  EXPECT_THAT(d.CompareAndSet("cas", std::nullopt, 5), IsOkAndHolds(false));  // present now
  EXPECT_THAT(d.CompareAndSet("cas", 3, 5), IsOkAndHolds(false));
  std::vector<Process> ps;
  for (int i = 0; i < 10; ++i) ps.emplace_back(Visit, d, v, 50);
  RunAll(ps);
  EXPECT_THAT(d.Get("visits"), IsOkAndHolds(500));
  EXPECT_THAT(d.Get("cas"), IsOkAndHolds(500));
  EXPECT_THAT(v.Get(), IsOkAndHolds(1000));

  // The update's result, extra arguments, a missing key, and a throw that changes nothing.
  EXPECT_THAT(d.Update("visits", [](int64_t& n, int64_t by) { return n *= by; }, int64_t{3}),
              IsOkAndHolds(1500));
  EXPECT_THAT(d.Update("nobody", [](int64_t& n) { return ++n; }),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(d.Update("visits",
                       [](int64_t& n) -> int64_t {
                         n = -1;
                         throw std::runtime_error("no more visits");
                       }),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("no more visits")));
  EXPECT_THAT(d.Get("visits"), IsOkAndHolds(1500));
  EXPECT_THAT(d.Keys(), IsOkAndHolds(ElementsAre("visits", "cas")));
  ExpectCountReaches(*m, 2);
}

// A Dict of strings: Update changes the stored value in place, its encoding and length too.
TEST_P(ManagerTest, UpdateRewritesValuesOfAnySize) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<int, std::vector<std::string>>()));
  MPROC_ASSERT_OK(d.Set(1, {}));
  for (int i = 0; i < 3; ++i) {
    MPROC_ASSERT_OK(d.Update(1, [](std::vector<std::string>& v, std::string s) { v.push_back(s); },
                       std::string(1000 * (i + 1), 'a' + i))
                  .status());
  }
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> got, d.Get(1));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2], std::string(3000, 'c'));
  EXPECT_THAT(d.CompareAndSet(1, got, {"replaced"}), IsOkAndHolds(true));
  EXPECT_THAT(d.Get(1), IsOkAndHolds(ElementsAre("replaced")));
}

// CPython's TestInitializers: the initializer runs in the server before it serves (here it
// sets what a method run in the server then reads), and one that throws fails Start clearly.
std::string g_server_greeting = "unset";
void Greet(std::string greeting, int32_t times) {
  g_server_greeting.clear();
  for (int i = 0; i < times; ++i) g_server_greeting += greeting;
}
void InitThrows() { throw std::runtime_error("initializer refused"); }
struct Probe {};
std::string ReadGreeting(Probe&) { return g_server_greeting; }

TEST_P(ManagerTest, AnInitializerRunsInTheServerFirst) {
  ManagerOptions o;
  o.start_method = GetParam();
  ASSERT_OK_AND_ASSIGN(auto m, Manager::Start(o, Greet, std::string("hi"), 2));
  ASSERT_OK_AND_ASSIGN(ObjectProxy<Probe> probe, m->Make<Probe>());
  EXPECT_THAT(probe.Call(ReadGreeting), IsOkAndHolds("hihi"));
  EXPECT_EQ(g_server_greeting, "unset");  // it ran there, not here
  MPROC_ASSERT_OK(m->Shutdown());

  absl::StatusOr<std::unique_ptr<Manager>> failed = Manager::Start(o, InitThrows);
  EXPECT_THAT(failed.status(),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("ended before serving")));
}

// CPython's SharedMemoryManager: segments the server made lose their names when it shuts
// down, while views stay valid; a server killed instead leaves them to the orphan reclaim.
int WriteSegment(SharedMemory shm) {
  std::memcpy(shm.data(), "child", 6);
  return 0;
}

TEST_P(ManagerTest, SharedMemoryManagerUnlinksItsSegmentsAtShutdown) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(SharedMemory a, m->CreateSharedMemory(4096));
  ASSERT_OK_AND_ASSIGN(SharedMemory b, m->CreateSharedMemory(1 << 20, /*eager=*/true));
  EXPECT_NE(a.name(), b.name());
  EXPECT_EQ(a.size(), 4096u);
  EXPECT_EQ(b.size(), 1u << 20);
  ASSERT_OK_AND_ASSIGN(SharedMemory for_child, SharedMemory::Attach(a.name()));
  Process p(WriteSegment, for_child);  // a copy, as a Lock or a Value would be
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  EXPECT_EQ(p.exitcode(), 0);
  ASSERT_OK_AND_ASSIGN(SharedMemory again, SharedMemory::Attach(a.name()));
  EXPECT_EQ(std::memcmp(again.data(), "child", 6), 0);
  EXPECT_THAT(m->CreateSharedMemory(0).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  MPROC_ASSERT_OK(m->Shutdown());
  EXPECT_THAT(SharedMemory::Attach(a.name()).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(SharedMemory::Attach(b.name()).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(std::memcmp(a.data(), "child", 6), 0);  // the views stay valid
  EXPECT_THAT(m->CreateSharedMemory(16).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(ManagerTest, AKilledSharedMemoryManagersSegmentsAreReclaimedOnceUnused) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(SharedMemory kept, m->CreateSharedMemory(4096));
  ASSERT_OK_AND_ASSIGN(SharedMemory dropped, m->CreateSharedMemory(4096));
  const std::string dropped_name = dropped.name();
  dropped.Close();
  ASSERT_EQ(::kill(m->pid(), SIGKILL), 0);
  (void)m->Shutdown();  // reaps it
  MPROC_ASSERT_OK(SharedMemory::ReclaimOrphans().status());
  EXPECT_THAT(SharedMemory::Attach(dropped_name).status(),
              StatusIs(absl::StatusCode::kNotFound));
  // Still attached here: never pulled out from under its user.
  ASSERT_OK_AND_ASSIGN(SharedMemory again, SharedMemory::Attach(kept.name()));
  again.Close();
  MPROC_ASSERT_OK(kept.Unlink());
}

// Nested proxies are live (CPython's test_list_proxy_in_list, test_dict_proxy_nested,
// test_nested_queue): a proxy kept in a container is one reference held by the container, any
// number of readers in any process reach the same object, and dropping the outer container
// frees the inner ones.
TEST_P(ManagerTest, ProxiesInsideContainersAreLive) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  {
    std::vector<ListProxy<int>> inner;
    for (int i = 0; i < 3; ++i) {
      ASSERT_OK_AND_ASSIGN(auto l, m->List<int>({0, 1, 2}));
      inner.push_back(l);
    }
    ASSERT_OK_AND_ASSIGN(auto a, m->List<ListProxy<int>>(inner));
    inner.clear();  // the outer list's references keep them
    ASSERT_OK_AND_ASSIGN(ListProxy<int> first, a.Get(0));
    MPROC_ASSERT_OK(first.Set(-1, 55));
    ASSERT_OK_AND_ASSIGN(ListProxy<int> again, a.Get(0));  // a second reader of the same one
    EXPECT_THAT(again.ToVector(), IsOkAndHolds(ElementsAre(0, 1, 55)));
    ASSERT_OK_AND_ASSIGN(ListProxy<int> second, a.Get(1));
    EXPECT_THAT(second.Pop(), IsOkAndHolds(2));
    EXPECT_THAT(a.Get(1).value().Len(), IsOkAndHolds(2u));
    EXPECT_THAT(a.Get(2).value().Len(), IsOkAndHolds(3u));
    EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(4u));
  }
  ExpectCountReaches(*m, 0);

  {
    ASSERT_OK_AND_ASSIGN(auto pets, (m->Dict<std::string, int>({{"ferrets", 2}, {"hamsters", 4}})));
    ASSERT_OK_AND_ASSIGN(auto supplies, (m->Dict<std::string, int>({{"water", 10}, {"feed", 3}})));
    ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, DictProxy<std::string, int>>(
                                     {{"pets", pets}, {"supplies", supplies}})));
    EXPECT_THAT(d.Get("supplies").value().Get("water"), IsOkAndHolds(10));
    MPROC_ASSERT_OK(d.Get("supplies").value().Set("blankets", 5));
    EXPECT_THAT(supplies.Get("blankets"), IsOkAndHolds(5));
    pets = {};
    supplies = {};
    EXPECT_THAT(d.Get("pets").value().Get("ferrets"), IsOkAndHolds(2));
    ASSERT_OK_AND_ASSIGN(pets, d.Get("pets"));
    ASSERT_OK_AND_ASSIGN(supplies, d.Get("supplies"));
    MPROC_ASSERT_OK(d.Clear());  // the dict lets go; our proxies still hold them
    EXPECT_THAT(supplies.Get("water"), IsOkAndHolds(10));
    EXPECT_THAT(pets.Get("hamsters"), IsOkAndHolds(4));
    ASSERT_OK_AND_ASSIGN(auto l, (m->List<DictProxy<std::string, int>>({pets, supplies})));
    MPROC_ASSERT_OK(l.Get(0).value().Set("marmots", 1));
    EXPECT_THAT(pets.Get("marmots"), IsOkAndHolds(1));
    EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(4u));

    // A queue inside a list, and inside a dict.
    ASSERT_OK_AND_ASSIGN(auto ql, m->List<QueueProxy<int>>());
    MPROC_ASSERT_OK(ql.Append(m->Queue<int>().value()));
    MPROC_ASSERT_OK(ql.Get(0).value().Put(123));
    EXPECT_THAT(ql.Get(0).value().Get(), IsOkAndHolds(123));
    ASSERT_OK_AND_ASSIGN(auto qd, (m->Dict<int, QueueProxy<int>>()));
    MPROC_ASSERT_OK(qd.Set(0, m->Queue<int>().value()));
    MPROC_ASSERT_OK(qd.Get(0).value().Put(456));
    EXPECT_THAT(qd.Get(0).value().Get(), IsOkAndHolds(456));
    // Overwriting and deleting entries frees what they held.
    EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(8u));
    MPROC_ASSERT_OK(qd.Delete(0));
    MPROC_ASSERT_OK(ql.Set(0, m->Queue<int>().value()));
    EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(7u));
  }
  ExpectCountReaches(*m, 0);
}

// Children under every start method read the same nested proxies and write through them;
// the value they read from a Pop is theirs to keep using.
int UseNested(DictProxy<std::string, ListProxy<int>> d, int32_t id) {
  absl::StatusOr<ListProxy<int>> shared = d.Get("shared");
  if (!shared.ok()) return 2;
  if (!shared->Append(id).ok()) return 3;
  return 0;
}

TEST_P(ManagerTest, ChildrenShareNestedProxies) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  {
    ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<std::string, ListProxy<int>>()));
    MPROC_ASSERT_OK(d.Set("shared", m->List<int>().value()));
    std::vector<Process> ps;
    for (int32_t i = 0; i < 3; ++i) ps.emplace_back(UseNested, d, i);
    RunAll(ps);
    ASSERT_OK_AND_ASSIGN(ListProxy<int> popped, d.Pop("shared"));
    ASSERT_OK_AND_ASSIGN(std::vector<int> seen, popped.ToVector());
    std::sort(seen.begin(), seen.end());
    EXPECT_THAT(seen, ElementsAre(0, 1, 2));
    EXPECT_THAT(d.Len(), IsOkAndHolds(0u));
    EXPECT_THAT(m->ObjectCount(), IsOkAndHolds(2u));
    // A value holding proxies cannot be updated in the server (it would call itself).
    MPROC_ASSERT_OK(d.Set("again", popped));
    EXPECT_THAT(d.Update("again", [](ListProxy<int>&) { return 0; }),
                StatusIs(absl::StatusCode::kAborted, HasSubstr("inside the manager's server")));
  }
  ExpectCountReaches(*m, 0);
}

// A container holding itself (CPython's b.append(b)): reachable through itself; references are
// counted, so the cycle is freed once it is broken (a cycle left alone stays until the
// manager ends).
TEST_P(ManagerTest, AContainerHoldingItself) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  {
    ASSERT_OK_AND_ASSIGN(NamespaceProxy ns, m->Namespace());
    MPROC_ASSERT_OK(ns.Set("me", ns));
    ASSERT_OK_AND_ASSIGN(NamespaceProxy me, ns.Get<NamespaceProxy>("me"));
    MPROC_ASSERT_OK(me.Set("x", 1));
    EXPECT_THAT(ns.Get<int>("x"), IsOkAndHolds(1));
    MPROC_ASSERT_OK(me.Delete("me"));  // breaks the cycle
  }
  ExpectCountReaches(*m, 0);
}

// CPython's WithManagerTestPool: a Pool living in the manager, used from here and from a
// child; a task blocked in a worker holds up no other client of the server.
int64_t Square(int64_t x) { return x * x; }
int64_t Fails(int64_t) { throw std::runtime_error("task refused"); }
int64_t WaitThenAnswer(EventProxy go) { return go.Wait(absl::Seconds(30)).value_or(false) ? 42 : -1; }

int MapFromChild(PoolProxy pool, ListProxy<int64_t> out) {
  absl::StatusOr<std::vector<int64_t>> r = pool.Map(Square, std::vector<int64_t>{4, 5, 6});
  if (!r.ok()) return 2;
  return out.Extend(*r).ok() ? 0 : 3;
}

TEST_P(ManagerTest, APoolLivesInTheManager) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  {
    ASSERT_OK_AND_ASSIGN(PoolProxy pool, m->Pool(2, GetParam()));
    EXPECT_THAT(pool.Processes(), IsOkAndHolds(2));
    EXPECT_THAT(pool.Apply(Square, int64_t{7}), IsOkAndHolds(49));
    std::vector<int64_t> in(100);
    for (int64_t i = 0; i < 100; ++i) in[static_cast<size_t>(i)] = i;
    ASSERT_OK_AND_ASSIGN(std::vector<int64_t> sq, pool.Map(Square, in));
    ASSERT_EQ(sq.size(), 100u);
    for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(sq[static_cast<size_t>(i)], i * i);
    EXPECT_THAT(pool.Map(Square, in, /*chunksize=*/7), IsOkAndHolds(sq));
    EXPECT_THAT(pool.Map(Square, std::vector<int64_t>{}), IsOkAndHolds(ElementsAre()));
    EXPECT_THAT(pool.Apply(Fails, int64_t{1}),
                StatusIs(absl::StatusCode::kAborted, HasSubstr("task refused")));

    // A child uses the same pool.
    ASSERT_OK_AND_ASSIGN(auto out, m->List<int64_t>());
    std::vector<Process> ps;
    ps.emplace_back(MapFromChild, pool, out);
    RunAll(ps);
    EXPECT_THAT(out.ToVector(), IsOkAndHolds(ElementsAre(16, 25, 36)));

    // A task waiting in a worker (on a manager Event it got as an argument) while this thread
    // keeps using the server; then it is released.
    ASSERT_OK_AND_ASSIGN(EventProxy go, m->Event());
    absl::StatusOr<int64_t> waited = absl::UnknownError("not run");
    std::thread waiter([&] { waited = pool.Apply(WaitThenAnswer, go); });
    ASSERT_OK_AND_ASSIGN(auto d, (m->Dict<int, int>()));
    for (int i = 0; i < 50; ++i) MPROC_ASSERT_OK(d.Set(i, i));
    EXPECT_THAT(d.Len(), IsOkAndHolds(50u));
    MPROC_ASSERT_OK(go.Set());
    waiter.join();
    EXPECT_THAT(waited, IsOkAndHolds(42));

    // The same without a thread of our own: ApplyAsync returns at once, the server serves on
    // while the task waits, and the future has the answer once the task is released.
    auto mapped = pool.MapAsync(Square, std::vector<int64_t>{1, 2, 3});
    EXPECT_THAT(mapped.get(), IsOkAndHolds(ElementsAre(1, 4, 9)));
    ASSERT_OK_AND_ASSIGN(EventProxy go2, m->Event());
    auto pending = pool.ApplyAsync(WaitThenAnswer, go2);
    EXPECT_EQ(pending.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
    MPROC_ASSERT_OK(d.Set(99, 99));
    MPROC_ASSERT_OK(go2.Set());
    EXPECT_THAT(pending.get(), IsOkAndHolds(42));
  }
  ExpectCountReaches(*m, 0);
}

// CPython's WithManagerTestPool imap and imap_unordered: results stream out of the manager's
// pool while later chunks still run (one waits on an Event until we let it go), in input
// order or as they complete; an item's error comes in its place; DEADLINE_EXCEEDED from Next
// loses nothing; an iterator dropped early leaves the pool serving; a chunksize of 0 is an
// error.
int64_t SquareOrWait(std::pair<int64_t, EventProxy> item) {
  if (item.first >= 0) return item.first * item.first;
  return item.second.Wait(absl::Seconds(30)).value_or(false) ? 42 : -1;
}
int64_t FailsOnSeven(int64_t x) {
  if (x == 7) throw std::runtime_error("seven refused");
  return x;
}

TEST_P(ManagerTest, IMapStreamsResultsOutOfTheManagersPool) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  {
    ASSERT_OK_AND_ASSIGN(PoolProxy pool, m->Pool(2, GetParam()));
    std::vector<int64_t> in(100);
    for (int64_t i = 0; i < 100; ++i) in[static_cast<size_t>(i)] = i;
    for (size_t chunk : {size_t{1}, size_t{3}, size_t{100}}) {
      auto it = pool.IMap(Square, in, chunk);
      for (int64_t i = 0; i < 100; ++i) {
        std::optional<absl::StatusOr<int64_t>> r = it.Next(absl::Seconds(60));
        ASSERT_TRUE(r.has_value()) << "chunk " << chunk << " item " << i;
        ASSERT_THAT(*r, IsOkAndHolds(i * i)) << "chunk " << chunk;
      }
      EXPECT_FALSE(it.Next().has_value());
    }
    {
      auto it = pool.IMap(FailsOnSeven, std::vector<int64_t>{5, 6, 7, 8}, 2);
      EXPECT_THAT(*it.Next(), IsOkAndHolds(5));
      EXPECT_THAT(*it.Next(), IsOkAndHolds(6));
      EXPECT_THAT(*it.Next(), StatusIs(absl::StatusCode::kAborted, HasSubstr("seven refused")));
      EXPECT_THAT(*it.Next(), IsOkAndHolds(8));
      EXPECT_FALSE(it.Next().has_value());
    }
    // Streaming, in order: the first two results while the third still waits.
    ASSERT_OK_AND_ASSIGN(EventProxy go, m->Event());
    {
      auto it = pool.IMap(SquareOrWait, std::vector<std::pair<int64_t, EventProxy>>{
                                            {1, go}, {2, go}, {-1, go}});
      EXPECT_THAT(*it.Next(absl::Seconds(60)), IsOkAndHolds(1));
      EXPECT_THAT(*it.Next(absl::Seconds(60)), IsOkAndHolds(4));
      EXPECT_THAT(*it.Next(absl::Milliseconds(50)),
                  StatusIs(absl::StatusCode::kDeadlineExceeded));
      MPROC_ASSERT_OK(go.Set());
      EXPECT_THAT(*it.Next(absl::Seconds(60)), IsOkAndHolds(42));
      EXPECT_FALSE(it.Next().has_value());
    }
    // As they complete: the waiting first item's result comes last.
    ASSERT_OK_AND_ASSIGN(EventProxy go2, m->Event());
    {
      auto it = pool.IMapUnordered(SquareOrWait, std::vector<std::pair<int64_t, EventProxy>>{
                                                     {-1, go2}, {3, go2}});
      EXPECT_THAT(*it.Next(absl::Seconds(60)), IsOkAndHolds(9));
      MPROC_ASSERT_OK(go2.Set());
      EXPECT_THAT(*it.Next(absl::Seconds(60)), IsOkAndHolds(42));
      EXPECT_FALSE(it.Next().has_value());
    }
    {
      std::vector<int64_t> many(1000, 3);
      auto it = pool.IMapUnordered(Square, many, 1, /*window=*/4);
      EXPECT_THAT(*it.Next(absl::Seconds(60)), IsOkAndHolds(9));
    }  // dropped with chunks in flight
    EXPECT_THAT(pool.Apply(Square, int64_t{9}), IsOkAndHolds(81));
    auto bad = pool.IMap(Square, in, /*chunksize=*/0);
    EXPECT_THAT(*bad.Next(), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_FALSE(bad.Next().has_value());
  }
  ExpectCountReaches(*m, 0);
}

// An IMap whose manager is SIGKILLed mid-way fails its remaining items with ABORTED at once
// (no hang), and forgets its calls, so the broken connection closes (the leak check at the
// test's end counts descriptors). A fork child's copy of an iterator refuses to iterate
// (FAILED_PRECONDITION): its calls' replies go to the parent, which iterates on.
TEST_P(ManagerTest, IMapInAForkChildIsRefusedAndAKilledManagerFailsItsItems) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  ASSERT_OK_AND_ASSIGN(PoolProxy pool, m->Pool(2, GetParam()));
  ASSERT_OK_AND_ASSIGN(EventProxy go, m->Event());
  auto it = pool.IMap(SquareOrWait, std::vector<std::pair<int64_t, EventProxy>>{
                                        {2, go}, {-1, go}, {3, go}, {4, go}});
  EXPECT_THAT(*it.Next(absl::Seconds(60)), IsOkAndHolds(4));
  pid_t child = testing::Child([&] {
    std::optional<absl::StatusOr<int64_t>> r = it.Next(absl::Seconds(5));
    return r.has_value() && absl::IsFailedPrecondition(r->status()) ? 0 : 1;
  });
  EXPECT_EQ(testing::Join(child, 60), 0);
  const pid_t server = m->pid();
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  for (int i = 0; i < 3; ++i) {
    std::optional<absl::StatusOr<int64_t>> r = it.Next(absl::Seconds(30));
    ASSERT_TRUE(r.has_value());
    EXPECT_THAT(*r, StatusIs(absl::StatusCode::kAborted, HasSubstr(std::to_string(server))));
  }
  EXPECT_FALSE(it.Next().has_value());
}

// A client killed while its task runs in the manager's pool: the task's answer has nowhere to
// go and is dropped; the pool serves on, and ends with its last proxy.
int64_t StartThenWait(EventProxy started, EventProxy go) {
  if (!started.Set().ok()) return -2;
  return go.Wait(absl::Seconds(30)).value_or(false) ? 42 : -1;
}
int ApplyStartThenWait(PoolProxy pool, EventProxy started, EventProxy go) {
  return pool.Apply(StartThenWait, started, go).ok() ? 0 : 2;
}

TEST_P(ManagerTest, AClientKilledDuringAPoolTask) {
  auto m = Start();
  ASSERT_NE(m, nullptr);
  {
    ASSERT_OK_AND_ASSIGN(PoolProxy pool, m->Pool(1, GetParam()));
    ASSERT_OK_AND_ASSIGN(EventProxy started, m->Event());
    ASSERT_OK_AND_ASSIGN(EventProxy go, m->Event());
    Process p(ApplyStartThenWait, pool, started, go);
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
    EXPECT_THAT(started.Wait(absl::Seconds(60)), IsOkAndHolds(true));  // the task runs
    MPROC_ASSERT_OK(p.Kill());
    MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
    MPROC_ASSERT_OK(go.Set());  // the orphaned task ends
    EXPECT_THAT(pool.Apply(Square, int64_t{9}), IsOkAndHolds(81));
  }
  ExpectCountReaches(*m, 0);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ManagerTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

}  // namespace
}  // namespace mproc
