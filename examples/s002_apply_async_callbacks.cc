// Seed 002, "Pool.apply_async" with callbacks: on_ok for a result, on_err for an exception
// (its message is the exception's, as str(err)). Callbacks run on the pool's thread, before
// the result is marked ready.
#include <stdexcept>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "examples/py.h"
#include "pool/pool.h"
#include "serialize/remote_error.h"
#include "spawn/process.h"

int Work(int x) {
  absl::SleepFor(absl::Seconds(1));
  // pretend it's slow
  if (x == 5) throw std::invalid_argument("boom");
  return x * x;
}

void OnOk(const int& result) { py::Print("Result ready:", result); }
void OnErr(const absl::Status& err) { py::Print("Error:", mproc::ExceptionMessage(err)); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto pool = mproc::Pool::Create({.processes = 3}).value();
  std::vector<mproc::AsyncResult<int>> futures;
  for (int i = 0; i < 8; ++i) {
    futures.push_back(pool->ApplyAsyncWithCallbacks<int>({.on_success = OnOk, .on_error = OnErr}, Work, i));
  }
  py::Print("Main can do other stuff while workers run...");
  // Wait for all tasks
  for (auto& f : futures) f.Wait();
  py::Print("All tasks completed");
}
