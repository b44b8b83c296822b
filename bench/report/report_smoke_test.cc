// Runs the report binary in --quick mode and checks what it writes: the table on stdout, JSON
// that parses with every row present and consistent statistics, and an SVG chart.

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/test_util.h"
#include "bench/report.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::mproc::testing::ProgramOutcome;
using ::mproc::testing::ReadFile;
using ::mproc::testing::RunProgram;
using ::mproc::testing::Runfile;

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The report binary's outcome (its stdout and stderr in files under the test's tmpdir).
ProgramOutcome RunReport(std::vector<std::string> args) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  args.insert(args.begin(), Runfile("bench/report"));
  return RunProgram(std::move(args), tmp != nullptr ? tmp : "/tmp", /*limit_s=*/600);
}

TEST(ReportSmokeTest, QuickRunWritesTableJsonAndChart) {
  const std::string tmp = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  const std::string json = tmp + "/report.json", svg = tmp + "/report.svg";
  ProgramOutcome r = RunReport({"--quick", "--json=" + json, "--chart=" + svg,
                     "--peer_script=" + Runfile("bench/peers/cpython_mp.py")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("== Kernel limits"));
  EXPECT_THAT(r.out, HasSubstr("== CPython multiprocessing =="));
  EXPECT_THAT(r.out, HasSubstr("kernel.pipe_pingpong.same_cpu"));
  EXPECT_THAT(r.out, HasSubstr("mproc.base.pipe_pingpong.same_cpu"));

  // The file follows its schema (bench/report.proto) exactly: no field it lacks.
  bench::report::Report typed;
  const auto parsed = google::protobuf::util::JsonStringToMessage(ReadFile(json), &typed);
  ASSERT_TRUE(parsed.ok()) << parsed.ToString();
  EXPECT_EQ(typed.report(), "mproc");
  EXPECT_EQ(typed.format_version(), 2);
  EXPECT_EQ(typed.pinning().same_cpu_size(), 2);
  EXPECT_FALSE(typed.machine().kernel().empty());
  // And as plain JSON, the way a script reads it: optional fields are absent when unset.
  google::protobuf::Struct doc;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(json), &doc).ok());
  const auto& f = doc.fields();
  ASSERT_TRUE(f.count("rows"));
  ASSERT_EQ(static_cast<int>(f.at("rows").list_value().values_size()), typed.rows_size());
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
  // The MPI rows are present; where MPI was built and mpirun runs, mproc's are measured.
  for (const char* id : {"kernel.mpi.pingpong", "mproc.mpi.submit", "mproc.mpi.map_chunk1",
                         "mpi4py.futures.submit"}) {
    EXPECT_TRUE(ids.count(id)) << id;
  }
  if (::access(Runfile("mpi/mpi_rows").c_str(), X_OK) == 0 &&
      ::access("/usr/bin/mpirun", X_OK) == 0) {
    for (const auto& v : f.at("rows").list_value().values()) {
      const auto& row = v.struct_value().fields();
      const std::string id = row.at("id").string_value();
      if (id != "mproc.mpi.submit" && id != "kernel.mpi.pingpong") continue;
      EXPECT_GT(row.at("samples").list_value().values_size(), 0)
          << id << ": " << (row.count("skipped") ? row.at("skipped").string_value() : "");
    }
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
  ProgramOutcome r = RunReport({"--exit-now"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
}

TEST(ReportSmokeTest, UnknownFlagIsAnError) {
  ProgramOutcome r = RunReport({"--frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
}

TEST(ReportSmokeTest, MissingPythonIsASkippedSectionNotAFailure) {
  const std::string tmp = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  ProgramOutcome r = RunReport({"--quick", "--filter=cpython.value.incr,kernel.pthread_mutex_pshared_robust",
                     "--python=/nonexistent/python3", "--json=" + tmp + "/nopy.json",
                     "--chart=" + tmp + "/nopy.svg"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
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
