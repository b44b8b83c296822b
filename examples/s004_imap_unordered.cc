// Seed 004, "Process Pool with imap_unordered": results as they complete.
#include <numeric>
#include <vector>

#include "absl/time/clock.h"
#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int SlowSquare(int x) {
  absl::SleepFor(absl::Milliseconds(100));
  return x * x;
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<int> xs(5);
  std::iota(xs.begin(), xs.end(), 0);
  auto pool = mproc::Pool::Create({.processes = 2}).value();
  auto it = pool->IMapUnordered(SlowSquare, xs);
  while (auto result = it.Next()) py::Print("Got: " + std::to_string(result->value()));
  // Results arrive as they complete, not in order
}
