// Seed 002, "Basic Pool Setup": one worker per CPU this process may use.
#include <vector>

#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int Square(int x) { return x * x; }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  // create pool with N workers
  auto pool = mproc::Pool::Create({.processes = mproc::CpuCount()}).value();
  std::vector<int> numbers = {1, 2, 3, 4, 5};
  std::vector<int> results = pool->Map(Square, numbers).value();
  py::Print(results);
}
