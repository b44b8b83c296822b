#include "bench/report/output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/report.pb.h"
#include "bench/report/report_internal.h"
#include "google/protobuf/util/json_util.h"

namespace mproc::bench {

using report_internal::SectionName;

void ComputeStats(RowResult* r) {
  if (!r->cpu_samples.empty()) {
    std::vector<double> c = r->cpu_samples;
    std::sort(c.begin(), c.end());
    r->cpu_median = c.size() % 2 ? c[c.size() / 2] : (c[c.size() / 2 - 1] + c[c.size() / 2]) / 2;
  }
  if (r->samples.empty()) return;
  std::vector<double> s = r->samples;
  std::sort(s.begin(), s.end());
  size_t n = s.size();
  r->median = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  r->min = s.front();
  r->max = s.back();
}

std::string FormatNs(double ns) {
  if (ns < 1e3) return absl::StrFormat("%.3g ns", ns);
  if (ns < 1e6) return absl::StrFormat("%.3g us", ns / 1e3);
  if (ns < 1e9) return absl::StrFormat("%.3g ms", ns / 1e6);
  return absl::StrFormat("%.3g s", ns / 1e9);
}

std::optional<double> TimeRatio(const std::map<std::string, RowResult>& results,
                                const std::string& row, const std::string& baseline) {
  auto a = results.find(row), b = results.find(baseline);
  if (a == results.end() || b == results.end()) return std::nullopt;
  if (a->second.samples.empty() || b->second.samples.empty()) return std::nullopt;
  if (b->second.median <= 0) return std::nullopt;
  return a->second.median / b->second.median;
}

namespace {

std::string Rate(const RowSpec& s, const RowResult& r) {
  if (r.samples.empty()) return "";
  if (s.bytes_per_op > 0) return absl::StrFormat("%.2f GB/s", s.bytes_per_op / r.median);
  if (s.per_item) {
    double per_s = 1e9 / r.median;
    if (per_s >= 1e6) return absl::StrFormat("%.2f M/s", per_s / 1e6);
    return absl::StrFormat("%.1f k/s", per_s / 1e3);
  }
  return "";
}

std::string RatioText(double ratio) {
  // ratio = row time / baseline time.
  if (ratio >= 1) return absl::StrFormat("%.2fx slower", ratio);
  return absl::StrFormat("%.2fx faster", 1 / ratio);
}

const char* kSectionTitles[] = {"Kernel limits (C++, this binary)", "CPython multiprocessing",
                                "Other peers", "mproc"};

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

}  // namespace

std::string FormatTable(const std::vector<const RowSpec*>& specs,
                        const std::map<std::string, RowResult>& results, const Machine& m) {
  std::string out;
  absl::StrAppend(&out, "\nmproc benchmark report", m.quick ? " (--quick)" : "", "\n");
  absl::StrAppend(&out, "machine: ", m.kernel, "; ", m.cpu_model, "; ", m.cpus_online,
                  " CPUs online, allowed {", absl::StrJoin(m.cpus_allowed, ","), "}\n");
  absl::StrAppend(&out, "pinning: same-CPU rows on CPU ", m.pin_same.first,
                  m.pin_cross.second >= 0
                      ? absl::StrCat("; cross-CPU rows on CPUs ", m.pin_cross.first, " and ",
                                     m.pin_cross.second)
                      : std::string("; cross-CPU rows skipped (one CPU allowed)"),
                  "\n");
  if (!m.python.empty()) absl::StrAppend(&out, "CPython peer: ", m.python, "\n");
  absl::StrAppend(&out,
                  "figures: time per operation, median of repetitions [min - max]; ratios are "
                  "against baselines measured in this run\n"
                  "cpu/op: CPU time every process of the row spent per operation (rows that run "
                  "a second process); above the time, the sides spin\n");
  for (int sec = 0; sec < 4; ++sec) {
    bool any = false;
    for (const RowSpec* s : specs) {
      if (static_cast<int>(s->section) != sec) continue;
      if (!any) {
        absl::StrAppend(&out, "\n== ", kSectionTitles[sec], " ==\n");
        absl::StrAppend(&out, absl::StrFormat("%-44s %10s  %-21s %11s %10s  %s\n", "row",
                                              "median", "[min - max]", "rate", "cpu/op",
                                              "vs baselines"));
        any = true;
      }
      const RowResult& r = results.at(s->id);
      std::string median, range, rate = Rate(*s, r), vs;
      if (!r.error.empty()) {
        median = "ERROR";
        range = r.error;
      } else if (r.samples.empty()) {
        median = "skipped";
        range = r.skipped;
      } else {
        median = FormatNs(r.median);
        range = absl::StrCat("[", FormatNs(r.min), " - ", FormatNs(r.max), "]");
        std::vector<std::string> parts;
        for (const std::string& b : s->baselines) {
          std::optional<double> ratio = TimeRatio(results, s->id, b);
          parts.push_back(absl::StrCat(b, ": ", ratio ? RatioText(*ratio) : "n/a"));
        }
        vs = absl::StrJoin(parts, "; ");
      }
      const std::string cpu = r.cpu_samples.empty() || r.samples.empty() ? ""
                                                                          : FormatNs(r.cpu_median);
      absl::StrAppend(&out, absl::StrFormat("%-44s %10s  %-21s %11s %10s  %s\n", s->id, median,
                                            range, rate, cpu, vs));
    }
  }
  return out;
}

std::string FormatJson(const std::vector<const RowSpec*>& specs,
                       const std::map<std::string, RowResult>& results, const Machine& m) {
  report::Report doc;
  doc.set_report("mproc");
  doc.set_format_version(2);
  doc.set_quick(m.quick);
  report::Machine* machine = doc.mutable_machine();
  machine->set_kernel(m.kernel);
  machine->set_cpu_model(m.cpu_model);
  machine->set_cpus_online(m.cpus_online);
  for (int c : m.cpus_allowed) machine->add_cpus_allowed(c);
  machine->set_python(m.python);
  machine->set_features(m.features);
  doc.mutable_pinning()->add_same_cpu(m.pin_same.first);
  doc.mutable_pinning()->add_same_cpu(m.pin_same.second);
  if (m.pin_cross.second >= 0) {
    doc.mutable_pinning()->add_cross_cpu(m.pin_cross.first);
    doc.mutable_pinning()->add_cross_cpu(m.pin_cross.second);
  }
  doc.set_unit("ns per operation");
  for (const RowSpec* sp : specs) {
    const RowSpec& s = *sp;
    const RowResult& r = results.at(s.id);
    report::Row* row = doc.add_rows();
    row->set_id(s.id);
    row->set_title(s.title);
    row->set_section(SectionName(s.section));
    for (double v : r.samples) row->add_samples(v);
    if (!r.samples.empty()) {
      row->set_median(r.median);
      row->set_min(r.min);
      row->set_max(r.max);
    }
    if (!r.cpu_samples.empty()) {
      row->set_cpu_ns_per_op(r.cpu_median);
      for (double v : r.cpu_samples) row->add_cpu_samples(v);
    }
    if (!r.skipped.empty() && r.samples.empty()) row->set_skipped(r.skipped);
    if (!r.error.empty()) row->set_error(r.error);
    const std::string& note = !r.note.empty() ? r.note : s.note;
    if (!note.empty()) row->set_note(note);
    if (s.bytes_per_op > 0) row->set_bytes_per_op(s.bytes_per_op);
    for (const std::string& b : s.baselines) {
      report::Baseline* bl = row->add_baselines();
      bl->set_id(b);
      if (std::optional<double> ratio = TimeRatio(results, s.id, b)) bl->set_time_ratio(*ratio);
    }
  }
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;  // an empty list or a false flag still shows
  options.preserve_proto_field_names = true;     // cpu_model, not cpuModel
  std::string out;
  const auto printed = google::protobuf::util::MessageToJsonString(doc, &out, options);
  // Only a message that is not valid UTF-8 fails here; the report is written anyway, with the
  // reason in place of its rows.
  if (!printed.ok()) {
    return absl::StrCat("{\"report\": \"mproc\", \"error\": \"cannot print JSON: ",
                        absl::CEscape(printed.ToString()), "\"}\n");
  }
  return out;
}

std::string FormatSvgChart(const std::vector<const RowSpec*>& specs,
                           const std::map<std::string, RowResult>& results, const Machine& m) {
  // One group of bars per mproc row: for each baseline, speedup = baseline time / row time on a
  // log axis (1 = parity; right of it mproc is faster). Colour by the baseline's section.
  struct Bar {
    std::string label;
    double speedup;
    Section section;
  };
  struct Group {
    std::string id;
    std::vector<Bar> bars;
    std::string cpu;  // "time 70 ns, cpu 140 ns per op" for rows that measure CPU
  };
  std::map<std::string, Section> section_of;
  for (const RowSpec* s : specs) section_of[s->id] = s->section;
  std::vector<Group> groups;
  for (const RowSpec* s : specs) {
    if (s->section != Section::kMproc) continue;
    Group g{s->id, {}, ""};
    const RowResult& own = results.at(s->id);
    if (!own.cpu_samples.empty() && !own.samples.empty()) {
      g.cpu = absl::StrCat("  time ", FormatNs(own.median), ", cpu ", FormatNs(own.cpu_median),
                           " per op", own.cpu_median > 1.5 * own.median ? " (spins)" : "");
    }
    for (const std::string& b : s->baselines) {
      std::optional<double> ratio = TimeRatio(results, s->id, b);
      if (!ratio || *ratio <= 0) continue;
      auto it = section_of.find(b);
      g.bars.push_back({b, 1 / *ratio, it == section_of.end() ? Section::kPeer : it->second});
    }
    if (!g.bars.empty()) groups.push_back(std::move(g));
  }

  const double kMinLog = -2, kMaxLog = 3;  // 0.01x .. 1000x
  const int left = 330, width = 560, bar_h = 14, gap = 10, top = 70;
  int rows = 0;
  for (const Group& g : groups) rows += static_cast<int>(g.bars.size()) + 1;
  const int height = top + rows * (bar_h + 2) + static_cast<int>(groups.size()) * gap + 60;
  const int total_w = left + width + 120;
  auto x_of = [&](double speedup) {
    double l = std::log10(std::max(speedup, 1e-3));
    l = std::min(std::max(l, kMinLog), kMaxLog);
    return left + (l - kMinLog) / (kMaxLog - kMinLog) * width;
  };
  auto colour = [](Section s) {
    switch (s) {
      case Section::kKernel:
        return "#3b6fb6";
      case Section::kCPython:
        return "#e08a1e";
      default:
        return "#4a9a4a";
    }
  };

  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      total_w, height);
  absl::StrAppend(&svg, absl::StrFormat(
                            "<text x=\"10\" y=\"22\" font-size=\"16\" font-weight=\"bold\">mproc "
                            "vs its baselines, measured in one run%s</text>\n",
                            m.quick ? " (--quick)" : ""));
  absl::StrAppend(
      &svg, absl::StrFormat("<text x=\"10\" y=\"40\" fill=\"#555\">speedup = baseline time / "
                            "mproc time, log scale; right of 1x mproc is faster. %s</text>\n",
                            XmlEscape(m.kernel)));
  // Legend.
  int lx = 10;
  for (auto [name, sec] : {std::pair<const char*, Section>{"kernel limit", Section::kKernel},
                           {"CPython", Section::kCPython},
                           {"other peer", Section::kPeer}}) {
    absl::StrAppend(&svg, absl::StrFormat("<rect x=\"%d\" y=\"50\" width=\"12\" height=\"12\" "
                                          "fill=\"%s\"/><text x=\"%d\" y=\"60\">%s</text>\n",
                                          lx, colour(sec), lx + 16, name));
    lx += 120;
  }
  // Grid lines per decade.
  const int plot_bottom = height - 40;
  for (int d = static_cast<int>(kMinLog); d <= static_cast<int>(kMaxLog); ++d) {
    double x = x_of(std::pow(10.0, d));
    absl::StrAppend(&svg, absl::StrFormat("<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
                                          "stroke=\"%s\" stroke-width=\"%s\"/>\n",
                                          x, top - 4, x, plot_bottom, d == 0 ? "#000" : "#ccc",
                                          d == 0 ? "1.5" : "1"));
    absl::StrAppend(&svg,
                    absl::StrFormat("<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%gx</text>\n",
                                    x, plot_bottom + 16, std::pow(10.0, d)));
  }
  if (groups.empty()) {
    absl::StrAppend(&svg, absl::StrFormat("<text x=\"%d\" y=\"%d\" fill=\"#a00\">no mproc row "
                                          "with a measured baseline in this run</text>\n",
                                          left + 10, top + 20));
  }
  int y = top;
  for (const Group& g : groups) {
    absl::StrAppend(&svg, absl::StrFormat("<text x=\"10\" y=\"%d\"><tspan font-weight=\"bold\">%s"
                                          "</tspan><tspan fill=\"#a33\">%s</tspan></text>\n",
                                          y + bar_h - 3, XmlEscape(g.id), XmlEscape(g.cpu)));
    y += bar_h + 2;
    for (const Bar& b : g.bars) {
      double x0 = x_of(1), x1 = x_of(b.speedup);
      double bx = std::min(x0, x1), bw = std::max(1.0, std::fabs(x1 - x0));
      absl::StrAppend(&svg, absl::StrFormat("<text x=\"%d\" y=\"%d\" text-anchor=\"end\" "
                                            "fill=\"#333\">%s</text>\n",
                                            left - 6, y + bar_h - 3, XmlEscape(b.label)));
      absl::StrAppend(&svg, absl::StrFormat("<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" "
                                            "height=\"%d\" fill=\"%s\"/>\n",
                                            bx, y, bw, bar_h, colour(b.section)));
      absl::StrAppend(&svg, absl::StrFormat("<text x=\"%.1f\" y=\"%d\">%.3gx</text>\n",
                                            std::max(x0, x1) + 4, y + bar_h - 3, b.speedup));
      y += bar_h + 2;
    }
    y += gap;
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

bool WriteFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return false;
  }
  f << content;
  return static_cast<bool>(f);
}

}  // namespace mproc::bench
