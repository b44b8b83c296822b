#include "base/proc_stat.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mproc {

TaskStat ReadTaskStat(pid_t id) {
  TaskStat out;
  char path[48];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(id));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT && errno != ESRCH) out.found = TaskStat::kUnknown;
    return out;
  }
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return out;  // the task vanished between open and read
  buf[n] = '\0';
  // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so parse after the last ')'.
  const char* open = std::strchr(buf, '(');
  const char* p = std::strrchr(buf, ')');
  if (open == nullptr || p == nullptr || p < open || p[1] == '\0' || p[2] == '\0') {
    out.found = TaskStat::kUnknown;
    return out;
  }
  out.found = TaskStat::kFound;
  out.comm.assign(open + 1, p);
  out.state = p[2];
  p += 3;
  for (int field = 4; field <= 22 && *p != '\0'; ++field) {
    while (*p == ' ') ++p;
    char* end = nullptr;
    const long long v = std::strtoll(p, &end, 10);
    if (end == p) break;
    if (field == 4) out.ppid = static_cast<pid_t>(v);
    if (field == 20) out.threads = static_cast<long>(v);
    if (field == 22) out.start_time = static_cast<uint64_t>(v);
    p = end;
  }
  return out;
}

}  // namespace mproc
