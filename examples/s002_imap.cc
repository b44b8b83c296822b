// Seed 002, "Pool.imap and Pool.imap_unordered (Streaming Results)": tasks of random length;
// imap yields in input order, imap_unordered as they finish.
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int SlowSquare(int n) {
  // Simulate a task with random delay.
  std::random_device rd;
  double delay = std::uniform_real_distribution<double>(0.5, 2.0)(rd);
  // 0.5–2 seconds
  absl::SleepFor(absl::Seconds(delay));
  int result = n * n;
  py::Print(absl::StrFormat("Task %d finished in %.2fs → %d", n, delay, result));
  return result;
}

void DemoIMap() {
  py::Print("--- Using imap (ordered results) ---");
  std::vector<int> items = {1, 2, 3, 4, 5};
  auto pool = mproc::Pool::Create({.processes = 3}).value();  // 3 workers
  auto it = pool->IMap(SlowSquare, items, /*chunksize=*/1);
  while (auto res = it.Next()) py::Print("Got result (ordered):", res->value());
}

void DemoIMapUnordered() {
  py::Print("--- Using imap_unordered (unordered results) ---");
  std::vector<int> items = {1, 2, 3, 4, 5};
  auto pool = mproc::Pool::Create({.processes = 3}).value();
  auto it = pool->IMapUnordered(SlowSquare, items, /*chunksize=*/1);
  while (auto res = it.Next()) py::Print("Got result (unordered):", res->value());
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  DemoIMap();
  DemoIMapUnordered();
}
