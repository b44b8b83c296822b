// Seed 004, multiprocessing.Pool.
#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int Square(int x) { return x * x; }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto pool = mproc::Pool::Create({.processes = 4}).value();
  py::Print(pool->Map(Square, {1, 2, 3, 4, 5}).value());
  // [1, 4, 9, 16, 25]
}
