#include "pool/progress.h"

#include <time.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/mutex.h"

namespace mproc {
namespace {

int64_t NowMs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void WriteAllBytes(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return;  // a terminal that went away: drawing is best effort
    off += static_cast<size_t>(n);
  }
}

}  // namespace

std::string ProgressLine(const std::string& label, size_t done, size_t total, int width) {
  std::string prefix = label.empty() ? "" : label + " ";
  if (total == 0) return absl::StrCat(prefix, done, " done");
  if (done > total) done = total;
  const int filled = static_cast<int>(static_cast<double>(done) / static_cast<double>(total) *
                                      width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '-');
  const std::string count = std::to_string(total);
  return absl::StrFormat("%s[%s]  %*u/%u  %3d%%", prefix, bar, static_cast<int>(count.size()),
                         done, total, static_cast<int>(100 * done / total));
}

Progress ProgressBar(std::string label, int fd) {
  if (::isatty(fd) != 1) return [](size_t, size_t) {};
  struct State {
    Mutex mu;
    int64_t last_ms ABSL_GUARDED_BY(mu) = -1;
    bool finished ABSL_GUARDED_BY(mu) = false;
  };
  auto st = std::make_shared<State>();
  return [st, label = std::move(label), fd](size_t done, size_t total) {
    MutexLock lock(&st->mu);
    if (st->finished) return;
    const bool end = total > 0 && done >= total;
    const int64_t now = NowMs();
    if (!end && st->last_ms >= 0 && now - st->last_ms < 100) return;
    st->last_ms = now;
    std::string line = "\r" + ProgressLine(label, done, total);
    if (end) {
      line += "\n";
      st->finished = true;
    }
    WriteAllBytes(fd, line);
  };
}

}  // namespace mproc
