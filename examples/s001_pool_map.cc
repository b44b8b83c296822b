// Seed 001, "Example: Pool / map": sums of squares computed by four workers.
#include <cstdint>

#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int64_t Heavy(int64_t n) {
  int64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += i * i;  // sum(i*i for i in range(n))
  return s;
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto pool = mproc::Pool::Create({.processes = 4}).value();
  py::Print(pool->Map(Heavy, {int64_t{10'000}, int64_t{20'000}, int64_t{30'000}, int64_t{40'000}}).value());
}
