#include "log/log.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pool/pool.h"
#include "spawn/process.h"
#include "spdlog/details/log_msg.h"

namespace mproc {
namespace {

using ::testing::ElementsAre;
using ::testing::SizeIs;

// A sink that keeps each formatted line (without its newline).
class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& m) override {
    spdlog::memory_buf_t buf;
    formatter_->format(m, buf);
    std::string line(buf.data(), buf.size());
    while (!line.empty() && line.back() == '\n') line.pop_back();
    lines_.push_back(std::move(line));
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

struct Target {
  std::shared_ptr<CaptureSink> sink = std::make_shared<CaptureSink>();
  std::shared_ptr<spdlog::logger> logger;
  explicit Target(const std::string& pattern = "%J|%N|%j|%n|%v") {
    sink->set_formatter(ProcessFormatter(pattern));
    logger = std::make_shared<spdlog::logger>("parent", sink);
    logger->set_level(spdlog::level::trace);
  }
};

// Logs n records and leaves at once: by _exit (no destructors, no flush) or by SIGKILL.
void LogAndVanish(LogQueue q, int n, bool sigkill) {
  auto l = LogToQueue(q);
  for (int i = 0; i < n; ++i) l->info("rec {}", i);
  if (sigkill) ::raise(SIGKILL);
  ::_exit(0);
}

class LogTest : public ::testing::TestWithParam<StartMethod> {
 protected:
  void TearDown() override { ShutdownForkServer(); }
};

// CPython's QueueHandler pattern: every record of every child reaches the parent's sink, in
// the order each child logged, with the child's name and pid, although the children _exit or
// are SIGKILLed right after their last log call.
TEST_P(LogTest, ChildRecordsReachTheParentInOrderAndNoneIsLost) {
  ASSERT_OK_AND_ASSIGN(LogQueue q, LogQueue::Create());
  Target t;
  ASSERT_OK_AND_ASSIGN(auto listener, LogListener::Start(q, t.logger));
  constexpr int kChildren = 3, kRecords = 300;
  std::vector<Process> ps;
  for (int c = 0; c < kChildren; ++c) {
    ps.emplace_back(LogAndVanish, q, kRecords, /*sigkill=*/c == 2).SetName("logger-" + std::to_string(c));
    ps.back().SetStartMethod(GetParam());
  }
  for (auto& p : ps) MPROC_ASSERT_OK(p.Start());
  std::map<std::string, pid_t> pids;
  for (auto& p : ps) {
    MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
    pids[p.name()] = p.pid();
  }
  EXPECT_EQ(*ps[2].exitcode(), -SIGKILL);
  MPROC_ASSERT_OK(listener->Stop(absl::Seconds(60)));
  EXPECT_EQ(listener->written(), uint64_t{kChildren * kRecords});

  std::map<std::string, int> next;  // per child: the record expected next
  for (const std::string& line : t.sink->Lines()) {
    std::vector<std::string> f = absl::StrSplit(line, '|');
    ASSERT_THAT(f, SizeIs(5)) << line;
    EXPECT_EQ(f[0], "INFO");
    ASSERT_TRUE(pids.count(f[1])) << "no child named " << f[1];
    EXPECT_EQ(f[2], std::to_string(pids[f[1]])) << line;
    EXPECT_EQ(f[3], "mproc");
    EXPECT_EQ(f[4], "rec " + std::to_string(next[f[1]]++)) << "out of order from " << f[1];
  }
  for (int c = 0; c < kChildren; ++c) EXPECT_EQ(next["logger-" + std::to_string(c)], kRecords);
}

void LogLevels(LogQueue q) {
  auto l = LogToQueue(q, spdlog::level::info);
  l->debug("dropped in the child");
  l->info("dropped by the parent's level");
  l->warn("kept {}", 1);
  l->error("kept {}", 2);
}

TEST_P(LogTest, LevelsFilterOnBothSides) {
  ASSERT_OK_AND_ASSIGN(LogQueue q, LogQueue::Create());
  Target t("%J %v");
  t.logger->set_level(spdlog::level::warn);
  ASSERT_OK_AND_ASSIGN(auto listener, LogListener::Start(q, t.logger));
  Process p(LogLevels, q);
  p.SetStartMethod(GetParam());
  MPROC_ASSERT_OK(p.Start());
  MPROC_ASSERT_OK(p.Join(absl::Seconds(60)));
  MPROC_ASSERT_OK(listener->Stop(absl::Seconds(60)));
  EXPECT_THAT(t.sink->Lines(), ElementsAre("WARNING kept 1", "ERROR kept 2"));
  EXPECT_EQ(listener->written(), 2u);
}

void InitPoolLogging(LogQueue q) { LogToQueue(q); }
int LoggedSquare(int x) {
  GetLogger()->info("square {}", x);
  return x * x;
}

// The usual Pool spelling: the initializer points each worker's logger at the queue; records
// carry the workers' PoolWorker-N names.
TEST_P(LogTest, PoolWorkersLogThroughTheirInitializer) {
  ASSERT_OK_AND_ASSIGN(LogQueue q, LogQueue::Create());
  Target t("%N %v");
  ASSERT_OK_AND_ASSIGN(auto listener, LogListener::Start(q, t.logger));
  {
    Pool::Options o;
    o.processes = 2;
    o.start_method = GetParam();
    ASSERT_OK_AND_ASSIGN(auto pool, Pool::Create(o, InitPoolLogging, q));
    EXPECT_THAT(pool->Map(LoggedSquare, {1, 2, 3, 4}), IsOkAndHolds(ElementsAre(1, 4, 9, 16)));
  }
  MPROC_ASSERT_OK(listener->Stop(absl::Seconds(60)));
  std::vector<std::string> lines = t.sink->Lines();
  ASSERT_THAT(lines, SizeIs(4));
  std::vector<std::string> squares;
  for (const std::string& l : lines) {
    EXPECT_TRUE(absl::StartsWith(l, "PoolWorker-")) << l;
    squares.push_back(l.substr(l.find(' ') + 1));
  }
  std::sort(squares.begin(), squares.end());
  EXPECT_THAT(squares, ElementsAre("square 1", "square 2", "square 3", "square 4"));
}

INSTANTIATE_TEST_SUITE_P(StartMethods, LogTest,
                         ::testing::Values(StartMethod::kFork, StartMethod::kSpawn,
                                           StartMethod::kForkServer),
                         [](const auto& info) { return std::string(StartMethodName(info.param)); });

TEST(LogFormatTest, CPythonsLogToStderrFormat) {
  auto f = ProcessFormatter();
  spdlog::details::log_msg msg("mproc", spdlog::level::warn, "disk 91% full");
  spdlog::memory_buf_t buf;
  f->format(msg, buf);
  EXPECT_EQ(std::string(buf.data(), buf.size()), "[WARNING/MainProcess] disk 91% full\n");
  auto g = ProcessFormatter("%j");
  buf.clear();
  g->format(msg, buf);
  EXPECT_EQ(std::string(buf.data(), buf.size()), std::to_string(::getpid()) + "\n");
}

TEST(LogFormatTest, GetLoggerIsOnePerProcessAndQuietByDefault) {
  auto a = GetLogger();
  EXPECT_EQ(a, GetLogger());
  EXPECT_EQ(a->name(), "mproc");
  EXPECT_EQ(a->level(), spdlog::level::warn);
}

TEST(LogListenerTest, StopTwiceIsFineAndANullTargetIsRefused) {
  ASSERT_OK_AND_ASSIGN(LogQueue q, LogQueue::Create());
  EXPECT_THAT(LogListener::Start(q, nullptr).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  Target t;
  ASSERT_OK_AND_ASSIGN(auto listener, LogListener::Start(q, t.logger));
  MPROC_EXPECT_OK(listener->Stop());
  MPROC_EXPECT_OK(listener->Stop());
  EXPECT_EQ(listener->written(), 0u);
}

}  // namespace
}  // namespace mproc
