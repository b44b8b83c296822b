// Seed 002, "Pool.apply_async": .get() waits for the result.
#include "absl/time/clock.h"
#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int Square(int x) {
  absl::SleepFor(absl::Seconds(2));
  return x * x;
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto pool = mproc::Pool::Create({.processes = 2}).value();
  auto async_res = pool->ApplyAsync(Square, 5);
  py::Print("Main keeps running...");
  int result = async_res.Get().value();
  // Waits here until worker finishes
  py::Print("Result:", result);
}
