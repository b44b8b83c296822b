#include "sync/internal/owner.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mproc::sync_internal {
namespace {

thread_local uint32_t t_tid = 0;

void ResetTidAfterFork() { t_tid = 0; }

[[maybe_unused]] const int kAtfork = [] {
  pthread_atfork(nullptr, nullptr, ResetTidAfterFork);
  return 0;
}();

}  // namespace

uint32_t CurrentTid() {
  if (t_tid == 0) t_tid = static_cast<uint32_t>(::syscall(SYS_gettid));
  return t_tid;
}

bool TidAlive(uint32_t tid) {
  char path[48];
  std::snprintf(path, sizeof(path), "/proc/%u/stat", tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno != ENOENT && errno != ESRCH;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return false;  // the task vanished between open and read
  buf[n] = '\0';
  const char* close_paren = std::strrchr(buf, ')');
  if (close_paren == nullptr || close_paren[1] == '\0') return true;
  char state = close_paren[2];
  return state != 'Z' && state != 'X' && state != 'x';
}

}  // namespace mproc::sync_internal
