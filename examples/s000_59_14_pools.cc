// Seed 000 §59.14: a Pool of four workers maps square over range(10), in order.
#include <numeric>
#include <vector>

#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int Square(int x) { return x * x; }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<int> xs(10);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<int> results;
  {
    auto pool = mproc::Pool::Create({.processes = 4}).value();  // closed and joined at scope end
    results = pool->Map(Square, xs).value();
  }
  py::Print(results);
}
