// Seed 002, "Pool.apply_async": polling .ready().
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
  while (!async_res.Ready()) {
    py::Print("Still working...");
    absl::SleepFor(absl::Milliseconds(500));
  }
  py::Print("Done:", async_res.Get().value());
}
