#include "bench/report/report.h"

#include <sched.h>

#include <cerrno>
#include <cstring>

#include "bench/report/report_internal.h"

namespace mproc::bench {
namespace report_internal {

std::vector<std::unique_ptr<RegisteredRow>>& Rows() {
  static auto* rows = new std::vector<std::unique_ptr<RegisteredRow>>;
  return *rows;
}

std::vector<Registrar>& Registrars() {
  static auto* r = new std::vector<Registrar>;
  return *r;
}

int AddRegistrar(Registrar r) {
  Registrars().push_back(r);
  return 0;
}

RunConfig& Config() {
  static RunConfig c;
  return c;
}

RowSpec& AddExternalRow(const std::string& id, Section section, const std::string& title) {
  auto row = std::make_unique<RegisteredRow>();
  row->spec.id = id;
  row->spec.section = section;
  row->spec.title = title;
  RowSpec& ref = row->spec;
  Rows().push_back(std::move(row));
  return ref;
}

const char* SectionName(Section s) {
  switch (s) {
    case Section::kKernel:
      return "kernel";
    case Section::kCPython:
      return "cpython";
    case Section::kPeer:
      return "peer";
    case Section::kMproc:
      return "mproc";
  }
  return "?";
}

}  // namespace report_internal

using report_internal::Config;
using report_internal::RegisteredRow;
using report_internal::Rows;

RowBuilder& RowBuilder::Title(const std::string& t) {
  for (RowSpec* s : specs_) {
    s->title = t;
    if (specs_.size() > 1) {
      bool same = s->id.size() >= 9 && s->id.compare(s->id.size() - 9, 9, ".same_cpu") == 0;
      s->title += same ? " (same CPU)" : " (cross CPU)";
    }
  }
  return *this;
}

RowBuilder& RowBuilder::Baselines(const std::vector<std::string>& ids) {
  for (RowSpec* s : specs_) s->baselines.insert(s->baselines.end(), ids.begin(), ids.end());
  return *this;
}

RowBuilder& RowBuilder::PairBaselines(const std::vector<std::string>& ids) {
  for (RowSpec* s : specs_) {
    std::string suffix = s->id.substr(s->id.rfind('.'));
    for (const std::string& id : ids) s->baselines.push_back(id + suffix);
  }
  return *this;
}

RowBuilder& RowBuilder::CrossCpuBaselines(const std::vector<std::string>& ids) {
  for (RowSpec* s : specs_) {
    const std::string suffix = ".cross_cpu";
    if (s->id.size() >= suffix.size() &&
        s->id.compare(s->id.size() - suffix.size(), suffix.size(), suffix) == 0) {
      s->baselines.insert(s->baselines.end(), ids.begin(), ids.end());
    }
  }
  return *this;
}

RowBuilder& RowBuilder::BytesPerOp(double bytes) {
  for (RowSpec* s : specs_) s->bytes_per_op = bytes;
  return *this;
}

RowBuilder& RowBuilder::PerItem() {
  for (RowSpec* s : specs_) s->per_item = true;
  return *this;
}

RowBuilder& RowBuilder::Note(const std::string& n) {
  for (RowSpec* s : specs_) s->note = n;
  return *this;
}

RowBuilder AddRow(const std::string& id, Section section,
                  std::function<void(benchmark::State&)> fn) {
  auto row = std::make_unique<RegisteredRow>();
  row->spec.id = id;
  row->spec.section = section;
  row->fn = std::move(fn);
  RowSpec* spec = &row->spec;
  Rows().push_back(std::move(row));
  return RowBuilder({spec});
}

RowBuilder AddPairRows(const std::string& id, Section section,
                       std::function<void(benchmark::State&, PinCpus)> fn) {
  const int a = Config().cpu_a, b = Config().cpu_b;
  RowBuilder same = AddRow(id + ".same_cpu", section, [fn, a](benchmark::State& st) {
    fn(st, PinCpus{a, a});
  });
  RowSpec* same_spec = &Rows().back()->spec;
  AddRow(id + ".cross_cpu", section, [fn, a, b](benchmark::State& st) {
    if (b < 0) {
      SkipRow(st, "only one CPU is allowed (sched_getaffinity)");
      return;
    }
    fn(st, PinCpus{a, b});
  });
  RowSpec* cross_spec = &Rows().back()->spec;
  return RowBuilder({same_spec, cross_spec});
}

RowBuilder AddCrossCpuRow(const std::string& id, Section section,
                          std::function<void(benchmark::State&, PinCpus)> fn) {
  const int a = Config().cpu_a, b = Config().cpu_b;
  return AddRow(id + ".cross_cpu", section, [fn, a, b](benchmark::State& st) {
    if (b < 0) {
      SkipRow(st, "only one CPU is allowed (sched_getaffinity)");
      return;
    }
    fn(st, PinCpus{a, b});
  });
}

void SetOpsPerIteration(benchmark::State& state, double n) {
  state.counters["ops_per_iter"] = benchmark::Counter(n);
}

void SkipRow(benchmark::State& state, const std::string& reason) {
  state.SkipWithError(("skipped: " + reason).c_str());
}

bool QuickMode() { return Config().quick; }

const std::string& SelfExe() { return Config().self_exe; }

int PinSelf(int cpu) {
  if (cpu < 0) return 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : -errno;
}

ScopedPin::ScopedPin(int cpu) {
  static_assert(sizeof(saved_) == sizeof(cpu_set_t));
  if (cpu < 0) return;
  cpu_set_t* saved = reinterpret_cast<cpu_set_t*>(saved_);
  if (::sched_getaffinity(0, sizeof(cpu_set_t), saved) != 0) return;
  active_ = PinSelf(cpu) == 0;
}

ScopedPin::~ScopedPin() {
  if (active_) ::sched_setaffinity(0, sizeof(cpu_set_t), reinterpret_cast<cpu_set_t*>(saved_));
}

}  // namespace mproc::bench
