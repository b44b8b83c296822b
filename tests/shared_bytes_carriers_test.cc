// SharedBytes (shm/shared_bytes.h) through every carrier that takes a value — Queue,
// Pipe/Connection, Process arguments, Pool arguments and results, executor futures — under
// every start method: the receiver reads exactly the bytes written, in place, and a buffer a
// worker made and handed back is never reused under its holder.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "base/status_matchers.h"
#include "base/test_util.h"
#include "gtest/gtest.h"
#include "ipc/connection.h"
#include "ipc/queue.h"
#include "pool/executor.h"
#include "pool/pool.h"
#include "shm/shared_bytes.h"
#include "spawn/process.h"

namespace mproc {
namespace {

std::byte PatternByte(size_t i, int seed) { return static_cast<std::byte>((i * 131 + seed * 7 + 1) & 0xff); }

absl::StatusOr<SharedBytes> MakeFrame(int seed, size_t n) {
  absl::StatusOr<SharedBytesWriter> w = SharedBytesWriter::Allocate(n);
  if (!w.ok()) return w.status();
  for (size_t i = 0; i < n; ++i) w->data()[i] = PatternByte(i, seed);
  return std::move(*w).Freeze();
}

bool Matches(const SharedBytes& b, int seed, size_t n) {
  if (b.size() != n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (b.data()[i] != PatternByte(i, seed)) return false;
  }
  return true;
}

// Task and process bodies.
int CheckFrame(SharedBytes b, int seed, uint64_t n) { return Matches(b, seed, n) ? 0 : 2; }

SharedBytes FrameFromWorker(int seed) {
  absl::StatusOr<SharedBytes> b = MakeFrame(seed, 300000 + seed);
  return b.ok() ? *std::move(b) : SharedBytes();
}

int PutFrames(Queue<SharedBytes> q, int count) {
  for (int seed = 0; seed < count; ++seed) {
    absl::StatusOr<SharedBytes> b = MakeFrame(seed, (1 << 20) + seed);
    if (!b.ok() || !q.Put(*b).ok()) return 2;
  }  // each buffer is dropped here while the consumer may still hold it
  return 0;
}

int EchoChecksum(Connection conn) {
  absl::StatusOr<SharedBytes> b = conn.Recv<SharedBytes>(absl::Seconds(30));
  if (!b.ok()) return 2;
  uint64_t sum = 0;
  for (std::byte x : b->bytes()) sum += static_cast<uint8_t>(x);
  // Hand it back, too: a received buffer can be sent on.
  if (!conn.Send(sum).ok() || !conn.Send(*b).ok()) return 3;
  return 0;
}

class SharedBytesCarriersTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override {
    ShutdownForkServer();
    SharedBytes::ReleaseIdle();
  }
  void Run(Process& p) {
    p.SetStartMethod(GetParam());
    MPROC_ASSERT_OK(p.Start());
  }
  void Finish(Process& p) {
    MPROC_EXPECT_OK(p.Join(absl::Seconds(60)));
    if (p.IsAlive()) {
      ADD_FAILURE() << "child still running";
      (void)p.Kill();
      (void)p.Join();
    }
    EXPECT_EQ(p.exitcode(), 0);
  }
};

TEST_P(SharedBytesCarriersTest, ProcessArgument) {
  ASSERT_OK_AND_ASSIGN(SharedBytes b, MakeFrame(3, 5 << 20));
  Process p(CheckFrame, b, 3, uint64_t{5 << 20});
  Run(p);
  Finish(p);
}

TEST_P(SharedBytesCarriersTest, QueueFromAProducerThatDropsWhatItSent) {
  ASSERT_OK_AND_ASSIGN(Queue<SharedBytes> q, Queue<SharedBytes>::Create());
  constexpr int kFrames = 12;
  Process p(PutFrames, q, kFrames);
  Run(p);
  std::vector<SharedBytes> got;
  for (int seed = 0; seed < kFrames; ++seed) {
    ASSERT_OK_AND_ASSIGN(SharedBytes b, q.Get(absl::Seconds(60)));
    got.push_back(std::move(b));
  }
  Finish(p);
  // Every frame intact, in order, after the producer reused its pool for the later ones.
  for (int seed = 0; seed < kFrames; ++seed) {
    EXPECT_TRUE(Matches(got[seed], seed, (1 << 20) + seed)) << "frame " << seed;
  }
}

TEST_P(SharedBytesCarriersTest, PipeBothWays) {
  ASSERT_OK_AND_ASSIGN(auto pair, Pipe());
  Process p(EchoChecksum, std::move(pair.second));
  Run(p);
  ASSERT_OK_AND_ASSIGN(SharedBytes b, MakeFrame(9, 777777));
  MPROC_ASSERT_OK(pair.first.Send(b));
  uint64_t want = 0;
  for (std::byte x : b.bytes()) want += static_cast<uint8_t>(x);
  ASSERT_OK_AND_ASSIGN(uint64_t sum, pair.first.Recv<uint64_t>(absl::Seconds(30)));
  EXPECT_EQ(sum, want);
  ASSERT_OK_AND_ASSIGN(SharedBytes back, pair.first.Recv<SharedBytes>(absl::Seconds(30)));
  EXPECT_TRUE(Matches(back, 9, 777777));
  Finish(p);
}

TEST_P(SharedBytesCarriersTest, PoolArgumentsAndResults) {
  Pool::Options o;
  o.processes = 2;
  o.start_method = GetParam();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Pool> pool, Pool::Create(o));
  // Results: buffers made in the workers, all held here at once; a worker that reused one
  // it had already handed back would change its bytes.
  std::vector<int> seeds;
  for (int i = 0; i < 16; ++i) seeds.push_back(i);
  ASSERT_OK_AND_ASSIGN(std::vector<SharedBytes> frames, pool->Map(FrameFromWorker, seeds, 1));
  ASSERT_EQ(frames.size(), seeds.size());
  for (int i = 0; i < 16; ++i) EXPECT_TRUE(Matches(frames[i], i, 300000 + i)) << "frame " << i;
  // Arguments: the same buffers sent back to be checked in the workers.
  std::vector<std::tuple<SharedBytes, int, uint64_t>> jobs;
  for (int i = 0; i < 16; ++i) jobs.emplace_back(frames[i], i, 300000 + i);
  ASSERT_OK_AND_ASSIGN(std::vector<int> rc, pool->StarMap(CheckFrame, jobs, 2));
  EXPECT_EQ(rc, std::vector<int>(16, 0));
}

TEST_P(SharedBytesCarriersTest, ExecutorFutures) {
  ProcessPoolExecutor::Options o;
  o.max_workers = 2;
  o.start_method = GetParam();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ProcessPoolExecutor> ex, ProcessPoolExecutor::Create(o));
  ASSERT_OK_AND_ASSIGN(SharedBytes b, MakeFrame(5, 2 << 20));
  Future<int> checked = ex->Submit(CheckFrame, b, 5, uint64_t{2 << 20});
  Future<SharedBytes> made = ex->Submit(FrameFromWorker, 11);
  EXPECT_THAT(checked.Result(absl::Seconds(60)), IsOkAndHolds(0));
  ASSERT_OK_AND_ASSIGN(SharedBytes m, made.Result(absl::Seconds(60)));
  EXPECT_TRUE(Matches(m, 11, 300011));
}

// Descriptors of SharedBytes memfds this process has open.
int BufferDescriptors() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d)) {
    char target[256];
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t len = ::readlink(path.c_str(), target, sizeof(target) - 1);
    if (len > 0 && std::string_view(target, len).rfind("/memfd:mproc-bytes", 0) == 0) ++n;
  }
  ::closedir(d);
  return n;
}

class SharedBytesKillTest : public ::testing::Test {
 protected:
  void TearDown() override { SharedBytes::ReleaseIdle(); }
};

// A producer SIGKILLed after Allocate, after Freeze, or after Put: an item it put arrives
// whole (Put is durable); nothing else arrives; and once the consumer drops what it got, this
// process holds no buffer descriptor.
TEST_F(SharedBytesKillTest, AProducerKilledAtAnyStepLosesNoPutItemAndLeavesNothingHeld) {
  for (int step = 0; step < 3; ++step) {
    ASSERT_OK_AND_ASSIGN(Queue<SharedBytes> q, Queue<SharedBytes>::Create());
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd reached_r(p[0]), reached_w(p[1]);
    pid_t pid = testing::Child([&] {
      auto reached = [&] {
        (void)!::write(reached_w.get(), "r", 1);
        ::pause();
      };
      absl::StatusOr<SharedBytesWriter> w = SharedBytesWriter::Allocate(1 << 20);
      if (!w.ok()) return 2;
      for (size_t i = 0; i < w->size(); ++i) w->data()[i] = PatternByte(i, step);
      if (step == 0) reached();
      absl::StatusOr<SharedBytes> b = std::move(*w).Freeze();
      if (!b.ok()) return 3;
      if (step == 1) reached();
      if (!q.Put(*b).ok()) return 4;
      reached();
      return 5;
    });
    ASSERT_TRUE(testing::WaitReadable(reached_r.get(), 30)) << "step " << step;
    ::kill(pid, SIGKILL);
    EXPECT_EQ(testing::Join(pid), 128 + SIGKILL);
    if (step == 2) {
      ASSERT_OK_AND_ASSIGN(SharedBytes got, q.Get(absl::Seconds(30)));
      EXPECT_TRUE(Matches(got, step, 1 << 20));
      EXPECT_EQ(BufferDescriptors(), 1);  // the one it holds (the count sees them)
    } else {
      EXPECT_THAT(q.GetNowait().status(), StatusIs(absl::StatusCode::kUnavailable)) << step;
    }
    EXPECT_EQ(BufferDescriptors(), 0) << "step " << step;
  }
}

// A consumer SIGKILLed while it holds a buffer gives it back: the producer's pool hands that
// buffer out again only after the kill.
TEST_F(SharedBytesKillTest, AConsumerKilledHoldingABufferGivesItBack) {
  ASSERT_OK_AND_ASSIGN(Queue<SharedBytes> q, Queue<SharedBytes>::Create());
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd got_r(p[0]), got_w(p[1]);
  pid_t pid = testing::Child([&] {
    absl::StatusOr<SharedBytes> b = q.Get(absl::Seconds(30));
    if (!b.ok() || !Matches(*b, 4, 2 << 20)) return 2;
    (void)!::write(got_w.get(), "g", 1);
    ::pause();
    return 3;
  });
  const std::byte* first;
  {
    ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(2 << 20));
    first = w.data();
    for (size_t i = 0; i < w.size(); ++i) w.data()[i] = PatternByte(i, 4);
    ASSERT_OK_AND_ASSIGN(SharedBytes b, std::move(w).Freeze());
    MPROC_ASSERT_OK(q.Put(b));
  }  // dropped here; the consumer holds it
  ASSERT_TRUE(testing::WaitReadable(got_r.get(), 30));
  {
    ASSERT_OK_AND_ASSIGN(SharedBytesWriter w, SharedBytesWriter::Allocate(2 << 20));
    EXPECT_NE(w.data(), first);
  }
  ::kill(pid, SIGKILL);
  EXPECT_EQ(testing::Join(pid), 128 + SIGKILL);
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter x, SharedBytesWriter::Allocate(2 << 20));
  ASSERT_OK_AND_ASSIGN(SharedBytesWriter y, SharedBytesWriter::Allocate(2 << 20));
  EXPECT_TRUE(x.data() == first || y.data() == first);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, SharedBytesCarriersTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

}  // namespace
}  // namespace mproc
