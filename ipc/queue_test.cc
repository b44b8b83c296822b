#include "ipc/queue.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/io_ring.h"
#include "base/owner.h"
#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ipc/wait.h"
#include "shm/segment.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;

TEST(QueueTest, FifoAndSizes) {
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create(6));
  EXPECT_TRUE(q.Empty());
  EXPECT_FALSE(q.Full());
  EXPECT_EQ(q.maxsize(), 6u);
  for (int i = 0; i < 6; ++i) MPROC_ASSERT_OK(q.Put(i));
  EXPECT_TRUE(q.Full());
  EXPECT_FALSE(q.Empty());
  EXPECT_EQ(q.Qsize(), 6u);
  EXPECT_THAT(q.PutNowait(6), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("full")));
  double t0 = testing::NowSeconds();
  EXPECT_THAT(q.Put(6, absl::Milliseconds(100)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(testing::NowSeconds() - t0, 0.099);
  for (int i = 0; i < 6; ++i) {
    ASSERT_OK_AND_ASSIGN(int v, q.Get());
    EXPECT_EQ(v, i);
  }
  EXPECT_EQ(q.Qsize(), 0u);
  EXPECT_TRUE(q.Empty());
  EXPECT_THAT(q.GetNowait(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("empty")));
  t0 = testing::NowSeconds();
  EXPECT_THAT(q.Get(absl::Milliseconds(200)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(testing::NowSeconds() - t0, 0.199);
}

TEST(QueueTest, PayloadsFromEmptyTo64MiB) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  for (size_t size : {size_t{0}, size_t{1}, size_t{(64 << 10) - 20}, size_t{64 << 10},
                      size_t{(64 << 10) + 1}, size_t{1} << 20, size_t{64} << 20}) {
    std::string item(size, '\0');
    for (size_t i = 0; i < size; ++i) item[i] = static_cast<char>(i * 7 + size);
    MPROC_ASSERT_OK(q.Put(item));
    ASSERT_OK_AND_ASSIGN(std::string got, q.Get(absl::Seconds(30)));
    EXPECT_EQ(got.size(), size);
    EXPECT_TRUE(got == item) << size;
  }
}

// A big item (it travels in a memfd) that the consumer receives but cannot map, out of
// address space: that Get fails saying so, and the item is not lost: the next Get, once the
// space is back, returns it, before anything put after it.
TEST(QueueTest, AnItemThatCannotBeMappedIsKeptForTheNextGet) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  std::string big(32 << 20, '\0');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i / 4096);
  MPROC_ASSERT_OK(q.Put(big));
  pid_t pid = testing::Child([&] {
    // A Get on another queue lets go of the big buffer an earlier test may have left this
    // thread; then the address space the process has, plus 8 MiB: too little to map 32 MiB.
    absl::StatusOr<Queue<std::string>> other = Queue<std::string>::Create();
    if (!other.ok() || !absl::IsUnavailable(other->GetNowait().status())) return 8;
    std::FILE* f = std::fopen("/proc/self/status", "re");
    char line[256];
    long vm_kb = 0;
    while (f != nullptr && std::fgets(line, sizeof(line), f)) {
      if (std::sscanf(line, "VmSize: %ld kB", &vm_kb) == 1) break;
    }
    if (f != nullptr) std::fclose(f);
    rlimit old;
    ::getrlimit(RLIMIT_AS, &old);
    rlimit tight = {static_cast<rlim_t>(vm_kb + (8 << 10)) * 1024, old.rlim_max};
    if (vm_kb == 0 || ::setrlimit(RLIMIT_AS, &tight) != 0) return 2;
    absl::StatusOr<std::string> first = q.Get(absl::Seconds(10));
    if (!absl::IsResourceExhausted(first.status()) ||
        std::string(first.status().message()).find("it is kept") == std::string::npos) {
      return 3;
    }
    if (!absl::IsResourceExhausted(q.GetNowait().status())) return 4;  // still kept, still first
    if (!q.Put("small, after it").ok()) return 7;
    ::setrlimit(RLIMIT_AS, &old);
    absl::StatusOr<std::string> again = q.Get(absl::Seconds(10));
    if (!again.ok() || *again != big) return 5;
    absl::StatusOr<std::string> next = q.Get(absl::Seconds(10));
    return next.ok() && *next == "small, after it" ? 0 : 6;
  });
  EXPECT_EQ(testing::Join(pid), 0);
  // The parent never had it: nothing is delivered twice.
  EXPECT_THAT(q.GetNowait().status(), StatusIs(absl::StatusCode::kUnavailable));
}

// The descriptors of a queue handle: rx, tx, segment, doorbell (QueueCore::EncodeHandle).
std::vector<int> HandleFds(const Queue<std::string>& q, EncodeBuffer& b) {
  Encode(q, b);
  return std::vector<int>(b.fds().begin(), b.fds().end());
}

// Overwrites the header of the `nth` record (1-based) in `q`'s shared segment, found by its
// tag ("QRPM"), as someone scribbling on shared memory would. False when there is no such
// record.
bool ScribbleOverRecordHeader(const Queue<std::string>& q, int nth) {
  EncodeBuffer b;
  const int seg_fd = HandleFds(q, b)[2];
  struct stat st;
  if (::fstat(seg_fd, &st) != 0) return false;
  void* p = ::mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, seg_fd, 0);
  if (p == MAP_FAILED) return false;
  auto* bytes = static_cast<unsigned char*>(p);
  const uint32_t tag = 0x4d505251;
  int seen = 0;
  for (off_t i = 4; i + 4 <= st.st_size && seen < nth; i += 4) {
    if (std::memcmp(bytes + i, &tag, 4) == 0 && ++seen == nth) std::memset(bytes + i - 4, 0xee, 8);
  }
  ::munmap(p, st.st_size);
  return seen == nth;
}

// Someone scribbles over a ring's records in the shared segment: a Get says so at once
// (INVALID_ARGUMENT), where it used to retry forever at 100% CPU, deaf to its deadline.
TEST(QueueTest, CorruptRingMemoryIsInvalidArgumentNotAHang) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  MPROC_ASSERT_OK(q.Put("an item"));
  ASSERT_TRUE(ScribbleOverRecordHeader(q, 1));
  const double t0 = testing::NowSeconds();
  pid_t pid = testing::Child([&] {
    absl::StatusOr<std::string> got = q.Get(absl::Seconds(30));
    return absl::IsInvalidArgument(got.status()) &&
                   std::string(got.status().message()).find("not records") != std::string::npos
               ? 0
               : 1;
  });
  EXPECT_EQ(testing::Join(pid, 20), 0);
  EXPECT_LT(testing::NowSeconds() - t0, 10.0);
}

// The same through GetMany: the items before the scribbled record come out, then
// INVALID_ARGUMENT, at once.
TEST(QueueTest, GetManyStopsAtCorruptRingMemoryWithTheItemsBeforeIt) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  for (const char* item : {"one", "two", "three", "four"}) MPROC_ASSERT_OK(q.Put(item));
  ASSERT_TRUE(ScribbleOverRecordHeader(q, 3));
  pid_t pid = testing::Child([&] {
    std::vector<std::string> out;
    absl::Status s = q.GetMany(out, 10, absl::Seconds(30));
    if (!absl::IsInvalidArgument(s)) return 1;
    if (std::string(s.message()).find("not records") == std::string::npos) return 2;
    return out == std::vector<std::string>{"one", "two"} ? 0 : 3;
  });
  EXPECT_EQ(testing::Join(pid, 20), 0);
}

// A handle whose segment is not a queue's (another memfd of the same size, all zeros) is
// refused when it is decoded, before anything reads it as rings.
TEST(QueueTest, AHandleToSomethingElseIsRefused) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  EncodeBuffer b;
  std::vector<int> fds = HandleFds(q, b);
  struct stat st;
  ASSERT_EQ(::fstat(fds[2], &st), 0);
  ASSERT_OK_AND_ASSIGN(Segment other, Segment::Create(static_cast<size_t>(st.st_size), "not-a-queue"));
  std::vector<UniqueFd> owned;
  for (size_t i = 0; i < fds.size(); ++i) {
    owned.emplace_back(::fcntl(i == 2 ? other.fd() : fds[i], F_DUPFD_CLOEXEC, 0));
  }
  EXPECT_THAT(Decode<Queue<std::string>>(b.bytes(), std::move(owned)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an mproc queue")));
}

TEST(QueueTest, CloseFailsLaterCallsAndWakesABlockedGet) {
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
  absl::Status blocked;
  std::thread getter([&] { blocked = q.Get().status(); });
  ::usleep(50'000);
  q.Close();
  getter.join();
  EXPECT_THAT(blocked, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("closed")));
  EXPECT_THAT(q.Put(1), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("closed")));
  EXPECT_THAT(q.Get(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(q.closed());
  q.Close();  // idempotent
}

TEST(QueueTest, ItemsCarryingDescriptors) {
  ASSERT_OK_AND_ASSIGN(Queue<UniqueFd> q, Queue<UniqueFd>::Create());
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]);
  {
    UniqueFd w(p[1]);
    MPROC_ASSERT_OK(q.Put(w));
  }  // our copy is closed: the queued record holds the only reference
  ASSERT_OK_AND_ASSIGN(UniqueFd w2, q.Get());
  ASSERT_EQ(::write(w2.get(), "q", 1), 1);
  char c;
  ASSERT_EQ(::read(r.get(), &c, 1), 1);
  EXPECT_EQ(c, 'q');
}

TEST(QueueTest, UnboundedQueueHasAByteBudget) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  std::string item(1000, 'x');
  int put = 0;
  absl::Status s;
  while ((s = q.PutNowait(item)).ok()) ++put;
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget")));
  EXPECT_GT(put, 10);
  EXPECT_EQ(q.Qsize(), static_cast<size_t>(put));  // the refused item left no trace
  for (int i = 0; i < put; ++i) MPROC_ASSERT_OK(q.Get().status());
  EXPECT_TRUE(q.Empty());
}

// A producer blocked on a full byte budget sleeps until half the budget is free, but one that
// fits sooner is not left asleep when consumers stop short of that: here one Get frees room
// for exactly the waiting item, and nothing else is taken. Order and count still hold.
TEST(QueueTest, APutWaitingForRoomGoesThroughWhenConsumersStopShortOfHalf) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  const std::string item(1000, 'x');
  int put = 0;
  while (q.PutNowait(item).ok()) ++put;
  absl::Status blocked = absl::UnknownError("not run");
  pid_t producer_tid = 0;
  std::atomic<bool> started{false};
  std::thread producer([&] {
    producer_tid = static_cast<pid_t>(CurrentTid());
    started = true;
    blocked = q.Put(std::string(1000, 'y'), absl::Seconds(10));
  });
  while (!started) std::this_thread::yield();
  ASSERT_TRUE(testing::WaitUntilAsleep(producer_tid));  // the producer sleeps for room
  ASSERT_OK_AND_ASSIGN(std::string first, q.Get(absl::Seconds(1)));
  EXPECT_EQ(first, item);
  const double t0 = testing::NowSeconds();
  producer.join();
  MPROC_EXPECT_OK(blocked);
  EXPECT_LT(testing::NowSeconds() - t0, 5.0) << "the producer slept on although its item fit";
  for (int i = 1; i < put; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string v, q.Get(absl::Seconds(1)));
    ASSERT_EQ(v, item);
  }
  ASSERT_OK_AND_ASSIGN(std::string last, q.Get(absl::Seconds(1)));
  EXPECT_EQ(last, std::string(1000, 'y'));
  EXPECT_TRUE(q.Empty());
}

TEST(JoinableQueueTest, JoinWaitsForEveryTaskDone) {
  ASSERT_OK_AND_ASSIGN(JoinableQueue<int> q, JoinableQueue<int>::Create());
  MPROC_EXPECT_OK(q.Join(absl::ZeroDuration()));  // nothing put: done
  for (int i = 0; i < 3; ++i) MPROC_ASSERT_OK(q.Put(i));
  EXPECT_THAT(q.Join(absl::Milliseconds(50)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  std::thread worker([&] {
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(q.Get().ok());
      ::usleep(10'000);
      ASSERT_TRUE(q.TaskDone().ok());
    }
  });
  MPROC_EXPECT_OK(q.Join(absl::Seconds(30)));
  worker.join();
  EXPECT_THAT(q.TaskDone(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too many")));
}

TEST(SimpleQueueTest, PutGetEmpty) {
  ASSERT_OK_AND_ASSIGN(SimpleQueue<std::vector<int>> q, SimpleQueue<std::vector<int>>::Create());
  EXPECT_TRUE(q.Empty());
  MPROC_ASSERT_OK(q.Put({1, 2, 3}));
  EXPECT_FALSE(q.Empty());
  ASSERT_OK_AND_ASSIGN(std::vector<int> v, q.Get());
  EXPECT_EQ(v, (std::vector<int>{1, 2, 3}));
}

TEST(QueueTest, ManyThreadsNothingLostNothingDuplicatedFifoPerProducer) {
  using Item = std::pair<int, int>;
  ASSERT_OK_AND_ASSIGN(Queue<Item> q, Queue<Item>::Create(64));
  constexpr int kProducers = 4, kConsumers = 3, kItems = 3000;
  std::vector<std::thread> threads;
  std::vector<std::vector<Item>> seen(kConsumers);
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kItems; ++i) ASSERT_TRUE(q.Put({p, i}).ok());
    });
  }
  std::atomic<int> remaining{kProducers * kItems};
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      while (remaining.load() > 0) {
        absl::StatusOr<Item> v = q.Get(absl::Milliseconds(20));
        if (!v.ok()) continue;
        remaining.fetch_sub(1);
        seen[c].push_back(*v);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<int> count(kProducers * kItems, 0);
  for (const auto& s : seen) {
    std::vector<int> last(kProducers, -1);
    for (auto [p, i] : s) {
      ++count[p * kItems + i];
      EXPECT_GT(i, last[p]);  // per-producer FIFO, as each consumer sees it
      last[p] = i;
    }
  }
  for (int n : count) ASSERT_EQ(n, 1);
}

TEST(QueueTest, PutManyKeepsOrderAcrossRingAndSocketItems) {
  // Small and 1 MiB items go through the producer's shared-memory ring; items over the ring's
  // 8 MiB limit go on the socket in a memfd. One producer's order holds across both paths.
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  std::vector<std::string> items;
  for (int i = 0; i < 100; ++i) {
    const char c = static_cast<char>('a' + i % 26);
    items.push_back(i % 37 == 5 ? std::string((9 << 20) + i, c)
                    : i % 10 == 3 ? std::string((1 << 20) + i, c)
                                  : std::to_string(i));
  }
  std::thread consumer([&] {
    for (int i = 0; i < 100; ++i) {
      absl::StatusOr<std::string> v = q.Get(absl::Seconds(30));
      ASSERT_TRUE(v.ok()) << v.status();
      EXPECT_TRUE(*v == items[i]) << i;
    }
  });
  size_t put = 0;
  MPROC_EXPECT_OK(q.PutMany(items, absl::Seconds(30), &put));
  EXPECT_EQ(put, items.size());
  consumer.join();
  EXPECT_TRUE(q.Empty());
  EXPECT_EQ(q.Qsize(), 0u);
}

TEST(QueueTest, GetManyTakesWhatIsThereUpToMaxInOrder) {
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
  std::vector<int> out;
  MPROC_ASSERT_OK(q.GetMany(out, 0, absl::ZeroDuration()));  // max 0: nothing, at once
  EXPECT_TRUE(out.empty());
  for (int i = 0; i < 10; ++i) MPROC_ASSERT_OK(q.Put(i));
  MPROC_ASSERT_OK(q.GetMany(out, 4, absl::Seconds(5)));
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3}));
  MPROC_ASSERT_OK(q.GetMany(out, 100, absl::Seconds(5)));  // only what is there: 6 more
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_THAT(q.GetMany(out, 8, absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(out.size(), 10u);
  EXPECT_TRUE(q.Empty());
}

TEST(QueueTest, GetManyFreesOneSlotPerItemOfABoundedQueue) {
  ASSERT_OK_AND_ASSIGN(JoinableQueue<int> q, JoinableQueue<int>::Create(5));
  for (int i = 0; i < 5; ++i) MPROC_ASSERT_OK(q.Put(i));
  EXPECT_TRUE(q.Full());
  std::vector<int> out;
  MPROC_ASSERT_OK(q.GetMany(out, 3, absl::Seconds(5)));
  EXPECT_EQ(out.size(), 3u);
  EXPECT_EQ(q.Qsize(), 2u);
  for (int i = 5; i < 8; ++i) MPROC_ASSERT_OK(q.PutNowait(i));  // three slots came back
  EXPECT_TRUE(q.Full());
  MPROC_ASSERT_OK(q.GetMany(out, 10, absl::Seconds(5)));
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  for (int i = 0; i < 8; ++i) MPROC_ASSERT_OK(q.TaskDone());
  MPROC_EXPECT_OK(q.Join(absl::Seconds(5)));
}

// From another process, ring items and socket items (over 8 MiB) mixed: every item once, in
// the producer's order, whatever batches the consumer's calls happen to take.
TEST(QueueTest, GetManyFromAnotherProcessLosesNothingAndKeepsOrder) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  constexpr int kItems = 20000;
  auto item = [](int i) {
    return i % 5000 == 77 ? std::string((9 << 20) + i, static_cast<char>('a' + i % 26))
                          : std::to_string(i);
  };
  pid_t pid = testing::Child([&] {
    std::vector<std::string> batch;
    for (int i = 0; i < kItems; ++i) {
      batch.push_back(item(i));
      if (batch.size() == 100 || i == kItems - 1) {
        if (!q.PutMany(batch, absl::Seconds(30)).ok()) return 2;
        batch.clear();
      }
    }
    return 0;
  });
  std::vector<std::string> out;
  int calls = 0;
  while (out.size() < static_cast<size_t>(kItems)) {
    MPROC_ASSERT_OK(q.GetMany(out, 64, absl::Seconds(30)));
    ++calls;
  }
  EXPECT_EQ(testing::Join(pid), 0);
  ASSERT_EQ(out.size(), static_cast<size_t>(kItems));
  for (int i = 0; i < kItems; ++i) ASSERT_TRUE(out[i] == item(i)) << i;
  EXPECT_LT(calls, kItems);  // some calls took more than one item
  EXPECT_TRUE(q.Empty());
}

// Two producer processes at once: GetMany takes runs only while one ring is active, so each
// producer's order holds and every item comes out once.
TEST(QueueTest, GetManyWithTwoProducersKeepsEachOnesOrder) {
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
  constexpr int kItems = 30000;
  std::vector<pid_t> pids;
  for (int p = 0; p < 2; ++p) {
    pids.push_back(testing::Child([&, p] {
      std::vector<int> batch;
      for (int i = 0; i < kItems; ++i) {
        batch.push_back(p * kItems + i);
        if (batch.size() == 50 || i == kItems - 1) {
          if (!q.PutMany(batch, absl::Seconds(30)).ok()) return 2;
          batch.clear();
        }
      }
      return 0;
    }));
  }
  std::vector<int> out;
  while (out.size() < 2u * kItems) MPROC_ASSERT_OK(q.GetMany(out, 64, absl::Seconds(30)));
  for (pid_t pid : pids) EXPECT_EQ(testing::Join(pid), 0);
  ASSERT_EQ(out.size(), 2u * kItems);
  int last[2] = {-1, -1};
  std::vector<int> seen(2 * kItems, 0);
  for (int v : out) {
    const int p = v / kItems;
    ASSERT_GT(v % kItems, last[p]);
    last[p] = v % kItems;
    ++seen[v];
  }
  for (int n : seen) ASSERT_EQ(n, 1);
  EXPECT_TRUE(q.Empty());
}

TEST(QueueTest, PutManyOfDescriptorItemsSendsUpTo32PerSystemCall) {
  ASSERT_OK_AND_ASSIGN(Queue<UniqueFd> q, Queue<UniqueFd>::Create());
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  std::vector<UniqueFd> items;
  for (int i = 0; i < 40; ++i) items.push_back(UniqueFd(::dup(w.get())));
  const IoRingCounters before = GetIoRingCounters();
  size_t put = 0;
  MPROC_ASSERT_OK(q.PutMany(items, absl::Seconds(10), &put));
  EXPECT_EQ(put, 40u);
  const IoRingCounters after = GetIoRingCounters();
  EXPECT_GE(after.batches, before.batches + 1);  // sendmmsg, or one io_uring submission
  if (ActiveIoMode() == IoMode::kPlain) {
    EXPECT_EQ(after.submissions, before.submissions);
  } else {
    EXPECT_GE(after.submissions, before.submissions + 32);
  }
  items.clear();
  w.Reset();
  for (int i = 0; i < 40; ++i) {
    ASSERT_OK_AND_ASSIGN(UniqueFd got, q.Get(absl::Seconds(5)));
    ASSERT_EQ(::write(got.get(), "k", 1), 1);
  }
  char buf[64];
  EXPECT_EQ(::read(r.get(), buf, sizeof(buf)), 40);
  EXPECT_TRUE(q.Empty());
}

TEST(QueueTest, PutManyOnABoundedQueueTakesOneSlotPerItemAndTimesOutPartway) {
  ASSERT_OK_AND_ASSIGN(JoinableQueue<int> q, JoinableQueue<int>::Create(5));
  std::vector<int> items = {10, 11, 12, 13, 14, 15, 16, 17};
  size_t put = 99;
  EXPECT_THAT(q.PutMany(items, absl::Milliseconds(100), &put),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(put, 5u);
  EXPECT_TRUE(q.Full());
  EXPECT_EQ(q.Qsize(), 5u);
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(int v, q.Get(absl::Seconds(5)));
    EXPECT_EQ(v, 10 + i);
    MPROC_EXPECT_OK(q.TaskDone());
  }
  MPROC_EXPECT_OK(q.Join(absl::Seconds(5)));  // the 3 unsent items were never counted
  // With a consumer, a long PutMany goes through a queue of 5 slots.
  std::vector<int> many(300);
  for (int i = 0; i < 300; ++i) many[i] = i;
  std::thread consumer([&] {
    for (int i = 0; i < 300; ++i) {
      absl::StatusOr<int> v = q.Get(absl::Seconds(30));
      ASSERT_TRUE(v.ok()) << v.status();
      EXPECT_EQ(*v, i);
      ASSERT_TRUE(q.TaskDone().ok());
    }
  });
  MPROC_EXPECT_OK(q.PutMany(many, absl::Seconds(30), &put));
  EXPECT_EQ(put, 300u);
  consumer.join();
  MPROC_EXPECT_OK(q.Join(absl::Seconds(5)));
}

TEST(QueueTest, AFullBoundedPutWaitsInTheActiveMode) {
  // In uring mode the slot futex and the Close doorbell are one io_uring wait; otherwise a
  // futex wait in slices. Either way a Get frees the slot and the Put goes through, and a Close
  // from another thread ends a blocked Put.
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create(1));
  MPROC_ASSERT_OK(q.Put(1));
  const uint64_t futex_before = GetIoRingCounters().futex_waits;
  const pid_t main_tid = static_cast<pid_t>(CurrentTid());
  std::thread getter([&] {
    ASSERT_TRUE(testing::WaitUntilAsleep(main_tid));  // the Put below waits for the slot
    absl::StatusOr<int> v = q.Get(absl::Seconds(5));
    EXPECT_TRUE(v.ok() && *v == 1);
  });
  MPROC_EXPECT_OK(q.Put(2, absl::Seconds(10)));
  getter.join();
  if (ActiveIoMode() == IoMode::kUring) {
    EXPECT_GT(GetIoRingCounters().futex_waits, futex_before);
  } else {
    EXPECT_EQ(GetIoRingCounters().futex_waits, futex_before);
  }
  absl::Status blocked;
  std::thread putter([&] { blocked = q.Put(3, absl::Seconds(20)); });
  ::usleep(30'000);
  double t0 = testing::NowSeconds();
  q.Close();
  putter.join();
  EXPECT_LT(testing::NowSeconds() - t0, 5.0);
  EXPECT_THAT(blocked, StatusIs(absl::StatusCode::kFailedPrecondition));
}

// A publish wakes a sleeping consumer only when it finds its ring empty, and a woken consumer
// that leaves items behind wakes the next: every consumer asleep in Get gets an item, whether
// the items come one Put at a time or in one PutMany (which wakes once, at its end). A lost
// wake-up would leave a consumer asleep until its 10 s timeout (after which it finds the item):
// the check below is that every Get returned long before that, not a speed measurement.
TEST(QueueTest, EverySleepingConsumerWakesForItsItem) {
  for (bool batch : {false, true}) {
    SCOPED_TRACE(batch ? "PutMany" : "one Put at a time");
    ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
    constexpr int kConsumers = 4;
    std::vector<absl::StatusOr<int>> got(kConsumers, absl::UnknownError("not run"));
    std::vector<std::thread> consumers;
    testing::ThreadIds ids;
    for (int c = 0; c < kConsumers; ++c) {
      consumers.emplace_back([&, c] {
        ids.Add();
        got[c] = q.Get(absl::Seconds(10));
      });
    }
    // Past the spin: every consumer sleeps in FutexWait.
    ASSERT_TRUE(ids.WaitAllAsleep(kConsumers));
    const std::vector<int> items = {10, 11, 12, 13};
    if (batch) {
      MPROC_ASSERT_OK(q.PutMany(std::span<const int>(items)));
    } else {
      for (int v : items) MPROC_ASSERT_OK(q.Put(v));
    }
    const double t0 = testing::NowSeconds();
    for (std::thread& t : consumers) t.join();
    EXPECT_LT(testing::NowSeconds() - t0, 5.0) << "a sleeping consumer was not woken";
    std::vector<int> values;
    for (const absl::StatusOr<int>& v : got) {
      MPROC_ASSERT_OK(v.status());
      values.push_back(*v);
    }
    std::sort(values.begin(), values.end());
    EXPECT_EQ(values, items);
  }
}

// Producers asleep on a full bounded queue are woken one per freed slot, and none is left
// asleep: each Put below would time out if its wake-up were lost.
TEST(QueueTest, EveryProducerWaitingForASlotGetsOne) {
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create(1));
  MPROC_ASSERT_OK(q.Put(0));
  constexpr int kProducers = 3;
  std::vector<absl::Status> put(kProducers, absl::UnknownError("not run"));
  std::vector<std::thread> producers;
  testing::ThreadIds ids;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      ids.Add();
      put[p] = q.Put(p + 1, absl::Seconds(10));
    });
  }
  ASSERT_TRUE(ids.WaitAllAsleep(kProducers));  // every producer waits for the one slot
  const double t0 = testing::NowSeconds();
  std::vector<int> values;
  for (int i = 0; i <= kProducers; ++i) {
    ASSERT_OK_AND_ASSIGN(int v, q.Get(absl::Seconds(10)));
    values.push_back(v);
  }
  for (std::thread& t : producers) t.join();
  // A lost wake-up leaves a producer asleep until its 10 s timeout.
  EXPECT_LT(testing::NowSeconds() - t0, 5.0) << "a producer waiting for a slot was not woken";
  for (const absl::Status& s : put) MPROC_EXPECT_OK(s);
  std::sort(values.begin(), values.end());
  EXPECT_EQ(values, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_TRUE(q.Empty());
}

// A GetMany that empties the queue leaves the doorbell quiet too, or an event loop polling
// fileno() would spin.
TEST(QueueTest, GetManyThatEmptiesTheQueueQuietsFileno) {
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
  const int fd = q.fileno();
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 5; ++i) MPROC_ASSERT_OK(q.Put(i));
  ASSERT_OK_AND_ASSIGN(std::vector<int> ready, Wait({fd}, absl::Seconds(5)));
  EXPECT_EQ(ready, std::vector<int>{fd});
  std::vector<int> out;
  MPROC_ASSERT_OK(q.GetMany(out, 64, absl::ZeroDuration()));
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3, 4}));
  ASSERT_OK_AND_ASSIGN(ready, Wait({fd}, absl::Milliseconds(50)));
  EXPECT_TRUE(ready.empty());
}

TEST(QueueTest, FilenoIsReadableWhileItemsWaitForWait) {
  ASSERT_OK_AND_ASSIGN(Queue<int> q, Queue<int>::Create());
  MPROC_ASSERT_OK(q.Put(1));  // queued before anyone asked for the descriptor
  const int fd = q.fileno();
  ASSERT_GE(fd, 0);
  int other[2];
  ASSERT_EQ(::pipe2(other, O_CLOEXEC), 0);
  UniqueFd other_r(other[0]), other_w(other[1]);
  ASSERT_OK_AND_ASSIGN(std::vector<int> ready, Wait({other_r.get(), fd}, absl::Seconds(5)));
  EXPECT_EQ(ready, std::vector<int>{fd});
  ASSERT_OK_AND_ASSIGN(int v, q.GetNowait());
  EXPECT_EQ(v, 1);
  // Empty again: once a consumer saw it empty, the doorbell is quiet.
  EXPECT_THAT(q.GetNowait(), StatusIs(absl::StatusCode::kUnavailable));
  ASSERT_OK_AND_ASSIGN(ready, Wait({other_r.get(), fd}, absl::Milliseconds(50)));
  EXPECT_TRUE(ready.empty());
  // A producer in another process rings it.
  pid_t pid = testing::Child([&] {
    ::usleep(20'000);
    return q.Put(42).ok() ? 0 : 1;
  });
  ASSERT_OK_AND_ASSIGN(ready, Wait({other_r.get(), fd}, absl::Seconds(10)));
  EXPECT_EQ(ready, std::vector<int>{fd});
  EXPECT_EQ(testing::Join(pid), 0);
  ASSERT_OK_AND_ASSIGN(v, q.GetNowait());
  EXPECT_EQ(v, 42);
  // Socket items (here: carrying descriptors) ring it too.
  ASSERT_OK_AND_ASSIGN(Queue<UniqueFd> fq, Queue<UniqueFd>::Create());
  const int ffd = fq.fileno();
  ASSERT_OK_AND_ASSIGN(ready, Wait({ffd}, absl::Milliseconds(20)));
  EXPECT_TRUE(ready.empty());
  MPROC_ASSERT_OK(fq.Put(other_w));
  ASSERT_OK_AND_ASSIGN(ready, Wait({ffd}, absl::Seconds(5)));
  EXPECT_EQ(ready, std::vector<int>{ffd});
  MPROC_EXPECT_OK(fq.GetNowait().status());
}

TEST(QueueTest, GetIntoReusesTheDestination) {
  ASSERT_OK_AND_ASSIGN(Queue<std::string> q, Queue<std::string>::Create());
  std::string out;
  out.reserve(2 << 20);
  const char* before = out.data();
  for (char c : {'a', 'b', 'c'}) {
    MPROC_ASSERT_OK(q.Put(std::string(1 << 20, c)));
    MPROC_ASSERT_OK(q.GetInto(out, absl::Seconds(5)));
    EXPECT_EQ(out.size(), 1u << 20);
    EXPECT_EQ(out.find_first_not_of(c), std::string::npos);
    EXPECT_EQ(out.data(), before);  // no reallocation
  }
  EXPECT_THAT(q.GetInto(out, absl::Milliseconds(10)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

}  // namespace
}  // namespace mproc
