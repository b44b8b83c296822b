// bench/report/report_internal.h — the report's registry, shared by report.cc and main.cc.
#ifndef MPROC_BENCH_REPORT_REPORT_INTERNAL_H_
#define MPROC_BENCH_REPORT_REPORT_INTERNAL_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/report/report.h"

namespace mproc::bench::report_internal {

struct RegisteredRow {
  RowSpec spec;
  std::function<void(benchmark::State&)> fn;  // empty for rows measured by a peer script
};

// Rows in registration order (stable addresses).
std::vector<std::unique_ptr<RegisteredRow>>& Rows();
std::vector<Registrar>& Registrars();

// Set by main() before the registrars run.
struct RunConfig {
  bool quick = false;
  std::string self_exe;
  int cpu_a = -1;  // first allowed CPU
  int cpu_b = -1;  // second allowed CPU, or -1 when only one is allowed
};
RunConfig& Config();

// Registers a row without a function (its samples come from elsewhere, e.g. CPython).
RowSpec& AddExternalRow(const std::string& id, Section section, const std::string& title);

const char* SectionName(Section s);

}  // namespace mproc::bench::report_internal

#endif  // MPROC_BENCH_REPORT_REPORT_INTERNAL_H_
