#include "base/process_id.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>

namespace mproc {
namespace {

std::atomic<pid_t> g_pid{0};

void ResetAfterFork() { g_pid.store(0, std::memory_order_relaxed); }

[[maybe_unused]] const int kAtfork = [] {
  pthread_atfork(nullptr, nullptr, ResetAfterFork);
  return 0;
}();

}  // namespace

pid_t CurrentPid() {
  pid_t pid = g_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    pid = ::getpid();
    g_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

}  // namespace mproc
