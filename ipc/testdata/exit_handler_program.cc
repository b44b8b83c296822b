// Uses a Queue, a Pipe and a code reference from main and again from an atexit handler, which
// glibc runs after it destroyed main's thread_local objects (base/thread_scratch.h). Prints
// "ok" when the handler's items and messages came through intact; run by
// ipc:exit_handler_test (under the asan config too, where a use of a destroyed buffer is a
// report on stderr).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "base/code_ref.h"
#include "ipc/connection.h"
#include "ipc/queue.h"

namespace {

// Never destroyed: the handler runs during exit.
mproc::Queue<std::string>* g_queue = nullptr;
std::pair<mproc::Connection, mproc::Connection>* g_pipe = nullptr;

void Target() {}

bool RoundTrip(const std::string& item) {
  if (!g_queue->Put(item).ok()) return false;
  absl::StatusOr<std::string> got = g_queue->Get(absl::Seconds(10));
  if (!got.ok() || *got != item) return false;
  if (!g_pipe->first.Send(item).ok()) return false;
  absl::StatusOr<std::string> msg = g_pipe->second.Recv<std::string>(absl::Seconds(10));
  if (!msg.ok() || *msg != item) return false;
  absl::StatusOr<mproc::CodeRef> ref = mproc::CodeRefFor(reinterpret_cast<const void*>(&Target));
  return ref.ok() && !ref->object.empty();
}

void AtExit() {
  // Longer than any small-string buffer, so it lands in the encode and take buffers' heap
  // memory, which a destroyed thread_local has freed.
  const bool ok = RoundTrip(std::string(3000, 'x')) && RoundTrip(std::string(70000, 'y'));
  std::printf("%s\n", ok ? "ok" : "bad");
  std::fflush(stdout);
}

}  // namespace

int main() {
  absl::StatusOr<mproc::Queue<std::string>> q = mproc::Queue<std::string>::Create();
  absl::StatusOr<std::pair<mproc::Connection, mproc::Connection>> p = mproc::Pipe();
  if (!q.ok() || !p.ok()) return 2;
  g_queue = new mproc::Queue<std::string>(*std::move(q));
  g_pipe = new std::pair<mproc::Connection, mproc::Connection>(*std::move(p));
  if (!RoundTrip(std::string(2000, 'm'))) return 3;
  std::atexit(AtExit);
  return 0;
}
