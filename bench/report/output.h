// bench/report/output.h — statistics, the table, the JSON and the SVG chart of the report.
#ifndef MPROC_BENCH_REPORT_OUTPUT_H_
#define MPROC_BENCH_REPORT_OUTPUT_H_

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bench/report/report.h"

namespace mproc::bench {

struct RowResult {
  std::vector<double> samples;  // ns per operation, one per repetition
  std::string skipped;          // non-empty: why the row did not run
  std::string error;            // non-empty: the row failed
  std::string note;             // from the peer (e.g. its iteration counts)
  double median = 0, min = 0, max = 0;
  // CPU time per operation of every process the row ran (CpuMeter), one per repetition; empty
  // for rows that do not measure it.
  std::vector<double> cpu_samples;
  double cpu_median = 0;
};

struct Machine {
  std::string kernel, cpu_model, features, python;
  int cpus_online = 0;
  std::vector<int> cpus_allowed;
  std::pair<int, int> pin_same{-1, -1}, pin_cross{-1, -1};
  bool quick = false;
};

void ComputeStats(RowResult* r);

// "812 ns", "45.1 us", "2.31 ms", "1.20 s".
std::string FormatNs(double ns);

// The time ratio row/baseline when both were measured in this run.
std::optional<double> TimeRatio(const std::map<std::string, RowResult>& results,
                                const std::string& row, const std::string& baseline);

std::string FormatTable(const std::vector<const RowSpec*>& specs,
                        const std::map<std::string, RowResult>& results, const Machine& m);
std::string FormatJson(const std::vector<const RowSpec*>& specs,
                       const std::map<std::string, RowResult>& results, const Machine& m);
std::string FormatSvgChart(const std::vector<const RowSpec*>& specs,
                           const std::map<std::string, RowResult>& results, const Machine& m);

bool WriteFile(const std::string& path, const std::string& content);

}  // namespace mproc::bench

#endif  // MPROC_BENCH_REPORT_OUTPUT_H_
