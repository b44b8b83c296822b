// Seed 001, "process pool": a pure function mapped by four workers, then aggregated.
#include <numeric>
#include <vector>

#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int Square(int n) { return n * n; }  // pure function for workers

int main(int argc, char** argv) {
  mproc::Init(argc, argv);  // where children run their targets: the "__main__" guard
  std::vector<int> xs(8);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<int> results;
  {
    auto pool = mproc::Pool::Create({.processes = 4}).value();  // four worker processes
    results = pool->Map(Square, xs).value();                     // parallel map
  }
  py::Print(results);                                                 // [0,1,4,9,16,25,36,49]
  py::Print(std::accumulate(results.begin(), results.end(), 0));     // aggregate
}
