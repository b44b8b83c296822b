// Seed 000 §59.3: Pool() spreads square over its workers (one per CPU this process may use).
#include <numeric>
#include <vector>

#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int Square(int x) { return x * x; }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<int> xs(10);
  std::iota(xs.begin(), xs.end(), 0);  // range(10)
  auto pool = mproc::Pool::Create().value();
  py::Print(pool->Map(Square, xs).value());
}
