// Seed 000 §59.32: ProcessPoolExecutor.map, results in input order.
#include <numeric>
#include <vector>

#include "examples/py.h"
#include "pool/executor.h"
#include "spawn/process.h"

int Square(int x) { return x * x; }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<int> xs(10);
  std::iota(xs.begin(), xs.end(), 0);
  auto ex = mproc::ProcessPoolExecutor::Create().value();
  auto results = ex->Map(Square, xs).value();  // one StatusOr per item
  std::vector<int> out;
  for (auto& r : results) out.push_back(r.value());  // list(ex.map(...))
  py::Print(out);
}
