// Runs the report binary in --quick mode and checks what it writes: the table on stdout, JSON
// that parses with every row present and consistent statistics, and an SVG chart.

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/syscall.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

extern char** environ;

namespace mproc {
namespace {

using ::mproc::testing::ReadFile;
using ::mproc::testing::Runfile;

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct RunResult {
  int exit_code = -1;
  std::string out;
};

RunResult RunBinary(std::vector<std::string> args) {
  int p[2];
  EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  RunResult r;
  int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(p[1]);
  if (rc != 0) {
    ::close(p[0]);
    ADD_FAILURE() << "posix_spawn " << args[0] << ": " << rc;
    return r;
  }
  char buf[8192];
  ssize_t n;
  while ((n = RetryEintr([&] { return ::read(p[0], buf, sizeof(buf)); })) > 0) {
    r.out.append(buf, static_cast<size_t>(n));
  }
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

TEST(ReportSmokeTest, QuickRunWritesTableJsonAndChart) {
  const std::string tmp = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  const std::string json = tmp + "/report.json", svg = tmp + "/report.svg";
  RunResult r = RunBinary({Runfile("bench/report"), "--quick", "--json=" + json, "--chart=" + svg,
                     "--peer_script=" + Runfile("bench/peers/cpython_mp.py")});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("== Kernel limits"));
  EXPECT_THAT(r.out, HasSubstr("== CPython multiprocessing =="));
  EXPECT_THAT(r.out, HasSubstr("kernel.pipe_pingpong.same_cpu"));
  EXPECT_THAT(r.out, HasSubstr("mproc.base.pipe_pingpong.same_cpu"));

  google::protobuf::Struct doc;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(json), &doc).ok());
  const auto& f = doc.fields();
  ASSERT_TRUE(f.count("rows"));
  ASSERT_TRUE(f.count("machine"));
  EXPECT_TRUE(f.at("quick").bool_value());
  std::set<std::string> ids;
  int measured = 0;
  for (const auto& v : f.at("rows").list_value().values()) {
    const auto& row = v.struct_value().fields();
    const std::string id = row.at("id").string_value();
    ids.insert(id);
    const auto& samples = row.at("samples").list_value().values();
    if (samples.empty()) {
      ASSERT_TRUE(row.count("skipped")) << id << " has neither samples nor a skip reason";
      EXPECT_FALSE(row.at("skipped").string_value().empty()) << id;
      continue;
    }
    ++measured;
    EXPECT_EQ(samples.size(), 3u) << id << ": --quick runs 3 repetitions";
    double mn = row.at("min").number_value(), md = row.at("median").number_value(),
           mx = row.at("max").number_value();
    for (const auto& s : samples) {
      EXPECT_GT(s.number_value(), 0) << id;
      EXPECT_GE(s.number_value(), mn) << id;
      EXPECT_LE(s.number_value(), mx) << id;
    }
    EXPECT_LE(mn, md) << id;
    EXPECT_LE(md, mx) << id;
    EXPECT_FALSE(row.count("error")) << id;
  }
  // The rows every machine can measure are measured.
  for (const char* id : {"kernel.pipe_pingpong.same_cpu", "kernel.futex_cas_lock",
                         "kernel.fork_exit_wait", "kernel.vfork_exec_self", "kernel.memcpy_64MiB",
                         "boost.interprocess_mutex", "mproc.base.pipe_pingpong.same_cpu"}) {
    EXPECT_TRUE(ids.count(id)) << id;
  }
  EXPECT_GE(measured, 20);
  // Every CPython row is present, measured or skipped with a reason.
  for (const char* id : {"cpython.process.fork", "cpython.lock", "cpython.pool.map_default",
                         "cpython.pickle.int"}) {
    EXPECT_TRUE(ids.count(id)) << id;
  }
  // An mproc row's ratio to a kernel baseline is computed from this run.
  for (const auto& v : f.at("rows").list_value().values()) {
    const auto& row = v.struct_value().fields();
    if (row.at("id").string_value() != "mproc.base.pipe_pingpong.same_cpu") continue;
    const auto& bl = row.at("baselines").list_value().values();
    ASSERT_FALSE(bl.empty());
    const auto& first = bl[0].struct_value().fields();
    EXPECT_EQ(first.at("id").string_value(), "kernel.pipe_pingpong.same_cpu");
    EXPECT_GT(first.at("time_ratio").number_value(), 0);
  }

  std::string chart = ReadFile(svg);
  EXPECT_THAT(chart, StartsWith("<svg"));
  EXPECT_THAT(chart, HasSubstr("mproc.base.pipe_pingpong.same_cpu"));
}

TEST(ReportSmokeTest, ExitNowExitsAtOnce) {
  RunResult r = RunBinary({Runfile("bench/report"), "--exit-now"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
}

TEST(ReportSmokeTest, UnknownFlagIsAnError) {
  RunResult r = RunBinary({Runfile("bench/report"), "--frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
}

TEST(ReportSmokeTest, MissingPythonIsASkippedSectionNotAFailure) {
  const std::string tmp = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  RunResult r = RunBinary({Runfile("bench/report"), "--quick", "--filter=cpython.value.incr,kernel.pthread_mutex_pshared_robust",
                     "--python=/nonexistent/python3", "--json=" + tmp + "/nopy.json",
                     "--chart=" + tmp + "/nopy.svg"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("not found"));
  google::protobuf::Struct doc;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(tmp + "/nopy.json"), &doc).ok());
  const auto& rows = doc.fields().at("rows").list_value().values();
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& v : rows) {
    const auto& row = v.struct_value().fields();
    if (row.at("id").string_value() == "cpython.value.incr") {
      EXPECT_THAT(row.at("skipped").string_value(), HasSubstr("not found"));
    } else {
      EXPECT_EQ(row.at("samples").list_value().values_size(), 3);
    }
  }
}

}  // namespace
}  // namespace mproc
