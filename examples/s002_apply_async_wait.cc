// Seed 002, "Pool.apply_async": .wait() then .get().
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
  async_res.Wait();
  // Just wait until it's finished
  py::Print("Now safe to get:", async_res.Get().value());
}
