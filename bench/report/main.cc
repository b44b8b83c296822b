// The benchmark report: mproc's main job. See bench/report/report.h and README.md.
//
//   bazel run -c opt //bench:report                 # full run, a few minutes
//   bazel run -c opt //bench:report -- --quick      # seconds (CI)
//   flags: --json=PATH --chart=PATH --filter=SUBSTR[,SUBSTR...] --no_python --list
//
// It prints one table (median and min–max of the repetitions of every row, and each row's
// ratio to its baselines measured in this same run), writes the same data as JSON with every
// sample and the machine's description, and an SVG chart of every mproc row's ratios.

#include <sched.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/features.h"
#include "spawn/process.h"
#include "bench/report/output.h"
#include "bench/report/report.h"
#include "bench/report/report_internal.h"
#include "benchmark/benchmark.h"
#include "bench/report/mpi_peer.h"
#include "bench/report/python_peer.h"

namespace mproc::bench {
namespace {

using report_internal::Config;
using report_internal::RegisteredRow;
using report_internal::Rows;

struct Flags {
  bool quick = false;
  bool no_python = false;
  bool list = false;
  std::string json_path;
  std::string chart_path;
  std::vector<std::string> filters;
  std::string python = "python3";
  // Debian's python3, for which python3-mpi4py is installed (another python3 may come first
  // on PATH).
  std::string mpi4py_python = "/usr/bin/python3";
  std::string peer_script;
};

bool StartsWith(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      f.quick = true;
    } else if (a == "--no_python") {
      f.no_python = true;
    } else if (a == "--list") {
      f.list = true;
    } else if (StartsWith(a, "--json=")) {
      f.json_path = a.substr(7);
    } else if (StartsWith(a, "--chart=")) {
      f.chart_path = a.substr(8);
    } else if (StartsWith(a, "--filter=")) {
      for (absl::string_view s : absl::StrSplit(a.substr(9), ',', absl::SkipEmpty())) {
        f.filters.emplace_back(s);
      }
    } else if (StartsWith(a, "--python=")) {
      f.python = a.substr(9);
    } else if (StartsWith(a, "--mpi4py_python=")) {
      f.mpi4py_python = a.substr(16);
    } else if (StartsWith(a, "--peer_script=")) {
      f.peer_script = a.substr(14);
    } else {
      std::fprintf(stderr,
                   "usage: report [--quick] [--json=PATH] [--chart=PATH] "
                   "[--filter=SUBSTR,...] [--no_python] [--python=PATH] [--list]\n"
                   "unknown flag: %s\n",
                   a.c_str());
      std::exit(2);
    }
  }
  return f;
}

// Paths given relative to where the user ran `bazel run` resolve there, not in runfiles.
std::string UserPath(const std::string& p, const std::string& fallback) {
  std::string path = p.empty() ? fallback : p;
  if (!path.empty() && path[0] == '/') return path;
  const char* base = std::getenv(p.empty() ? "BUILD_WORKSPACE_DIRECTORY" : "BUILD_WORKING_DIRECTORY");
  return base ? absl::StrCat(base, "/", path) : path;
}

void MakeParentDirs(const std::string& path) {
  for (size_t i = 1; i < path.size(); ++i) {
    if (path[i] == '/') ::mkdir(path.substr(0, i).c_str(), 0755);
  }
}

bool Selected(const Flags& f, const std::string& id) {
  if (f.filters.empty()) return true;
  for (const std::string& s : f.filters) {
    if (id.find(s) != std::string::npos) return true;
  }
  return false;
}

std::vector<int> AllowedCpus() {
  std::vector<int> out;
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return out;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &set)) out.push_back(i);
  }
  return out;
}

std::string ReadFirstMatch(const char* path, const char* key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (StartsWith(line, key)) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        size_t b = line.find_first_not_of(" \t", colon + 1);
        return b == std::string::npos ? "" : line.substr(b);
      }
    }
  }
  return "";
}

// Collects every repetition of every row from Google Benchmark.
class CollectingReporter : public benchmark::BenchmarkReporter {
 public:
  explicit CollectingReporter(std::map<std::string, RowResult>* results) : results_(results) {}

  bool ReportContext(const Context&) override { return true; }

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration) continue;
      const std::string id = run.run_name.function_name;
      RowResult& r = (*results_)[id];
      if (run.error_occurred) {
        if (StartsWith(run.error_message, "skipped: ")) {
          r.skipped = run.error_message.substr(9);
        } else {
          r.error = run.error_message;
        }
        continue;
      }
      double ops = 1;
      auto it = run.counters.find("ops_per_iter");
      if (it != run.counters.end() && it->second.value > 0) ops = it->second.value;
      double ns = run.real_accumulated_time * 1e9 / static_cast<double>(run.iterations) / ops;
      r.samples.push_back(ns);
      auto cpu = run.counters.find("cpu_ns");
      if (cpu != run.counters.end()) {
        r.cpu_samples.push_back(cpu->second.value / static_cast<double>(run.iterations) / ops);
      }
      if (run.repetition_index == 0 || r.samples.size() == 1) {
        std::fprintf(stderr, "  %-48s %s\n", id.c_str(), FormatNs(ns).c_str());
      }
    }
  }

 private:
  std::map<std::string, RowResult>* results_;
};

int Main(int argc, char** argv) {
  Flags flags = ParseFlags(argc, argv);
  std::vector<int> cpus = AllowedCpus();

  report_internal::RunConfig& cfg = Config();
  cfg.quick = flags.quick;
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  cfg.self_exe = n > 0 ? std::string(exe, static_cast<size_t>(n)) : argv[0];
  cfg.cpu_a = cpus.empty() ? -1 : cpus[0];
  cfg.cpu_b = cpus.size() >= 2 ? cpus[1] : -1;

  for (auto registrar : report_internal::Registrars()) registrar();

  if (flags.list) {
    for (const auto& row : Rows()) {
      std::printf("%-8s %-44s %s\n", report_internal::SectionName(row->spec.section),
                  row->spec.id.c_str(), row->spec.title.c_str());
    }
    return 0;
  }

  Machine machine;
  struct utsname u;
  if (::uname(&u) == 0) machine.kernel = absl::StrCat(u.sysname, " ", u.release, " ", u.machine);
  machine.cpu_model = ReadFirstMatch("/proc/cpuinfo", "model name");
  machine.cpus_online = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  machine.cpus_allowed = cpus;
  machine.pin_same = {cfg.cpu_a, cfg.cpu_a};
  machine.pin_cross = {cfg.cpu_a, cfg.cpu_b};
  machine.features = DescribeFeatures();
  machine.quick = flags.quick;

  std::map<std::string, RowResult> results;

  // C++ rows through Google Benchmark.
  const int reps = flags.quick ? 3 : 5;
  const double min_time = flags.quick ? 0.01 : 0.08;
  int cxx_rows = 0;
  for (const auto& row : Rows()) {
    if (!row->fn || !Selected(flags, row->spec.id)) continue;
    RegisteredRow* r = row.get();
    benchmark::RegisterBenchmark(r->spec.id.c_str(),
                                 [r](benchmark::State& st) { r->fn(st); })
        ->Repetitions(reps)
        ->MinTime(min_time)
        ->UseRealTime()
        ->Unit(benchmark::kNanosecond);
    ++cxx_rows;
  }
  std::fprintf(stderr, "mproc report: %d C++ rows, %d repetitions each%s\n", cxx_rows, reps,
               flags.quick ? " (quick)" : "");
  if (cxx_rows > 0) {
    int bargc = 1;
    char* bargv[] = {argv[0], nullptr};
    benchmark::Initialize(&bargc, bargv);
    CollectingReporter reporter(&results);
    std::fflush(nullptr);
    benchmark::RunSpecifiedBenchmarks(&reporter);
  }

  // CPython's rows from bench/peers/cpython_mp.py.
  std::vector<std::string> cpython_ids;
  for (const auto& row : Rows()) {
    if (row->spec.section == Section::kCPython && Selected(flags, row->spec.id)) {
      cpython_ids.push_back(row->spec.id);
    }
  }
  if (!cpython_ids.empty()) {
    PeerRun peer;
    if (flags.no_python) {
      peer.skipped = "--no_python given";
    } else {
      peer = RunPythonPeer(flags.python, flags.peer_script, flags.quick,
                           flags.filters.empty() ? std::vector<std::string>{} : cpython_ids);
    }
    machine.python = peer.version;
    for (const std::string& id : cpython_ids) {
      RowResult& r = results[id];
      auto it = peer.rows.find(id);
      if (!peer.skipped.empty()) {
        r.skipped = peer.skipped;
      } else if (it == peer.rows.end()) {
        r.skipped = "the CPython peer printed no such row";
      } else {
        r = it->second;
      }
    }
  }

  // The MPI rows: MpiExecutor and its floor, and mpi4py.futures, each under mpirun.
  std::vector<std::string> mpi_ids, mpi4py_ids;
  for (const auto& row : Rows()) {
    if (row->fn || !Selected(flags, row->spec.id)) continue;
    const std::string& id = row->spec.id;
    if (StartsWith(id, "mproc.mpi.") || StartsWith(id, "kernel.mpi.")) mpi_ids.push_back(id);
    if (StartsWith(id, "mpi4py.")) mpi4py_ids.push_back(id);
  }
  auto take = [&](const std::vector<std::string>& ids, const PeerRun& run, const char* who) {
    for (const std::string& id : ids) {
      RowResult& r = results[id];
      auto it = run.rows.find(id);
      if (!run.skipped.empty()) {
        r.skipped = run.skipped;
      } else if (it == run.rows.end()) {
        r.skipped = absl::StrCat(who, " printed no such row");
      } else {
        r = it->second;
        if (!run.version.empty()) r.note = absl::StrCat(r.note, " [", run.version, "]");
      }
    }
  };
  if (!mpi_ids.empty()) take(mpi_ids, RunMpiExecutorRows(flags.quick), "mpi/mpi_rows");
  if (!mpi4py_ids.empty()) {
    PeerRun run;
    if (flags.no_python) {
      run.skipped = "--no_python given";
    } else {
      run = RunMpi4pyRows(flags.mpi4py_python, flags.quick);
    }
    take(mpi4py_ids, run, "the mpi4py peer");
  }

  // Every selected row appears in the output, measured or not.
  std::vector<const RowSpec*> specs;
  for (const auto& row : Rows()) {
    if (Selected(flags, row->spec.id)) specs.push_back(&row->spec);
  }
  for (const RowSpec* s : specs) {
    RowResult& r = results[s->id];
    if (r.samples.empty() && r.skipped.empty() && r.error.empty()) r.skipped = "not measured";
    ComputeStats(&r);
  }

  std::string table = FormatTable(specs, results, machine);
  std::fputs(table.c_str(), stdout);
  std::fflush(stdout);

  const std::string json_path = UserPath(flags.json_path, "report-out/report.json");
  const std::string chart_path = UserPath(flags.chart_path, "report-out/report.svg");
  MakeParentDirs(json_path);
  MakeParentDirs(chart_path);
  bool ok = WriteFile(json_path, FormatJson(specs, results, machine));
  ok = WriteFile(chart_path, FormatSvgChart(specs, results, machine)) && ok;
  std::fprintf(stderr, "wrote %s and %s\n", json_path.c_str(), chart_path.c_str());

  int errors = 0;
  for (const RowSpec* s : specs) {
    if (!results[s->id].error.empty()) ++errors;
  }
  if (errors > 0) std::fprintf(stderr, "mproc report: %d row(s) failed\n", errors);
  return (ok && errors == 0) ? 0 : 1;
}

}  // namespace
}  // namespace mproc::bench

int main(int argc, char** argv) {
  // Spawned and fork-server children of the mproc.process rows run their target here.
  mproc::Init(argc, argv);
  // Rows that time process creation re-execute this binary and need it to exit at once.
  if (argc > 1 && std::strcmp(argv[1], "--exit-now") == 0) return 0;
  return mproc::bench::Main(argc, argv);
}
