// Seed 001, "Example: ProcessPoolExecutor": squares of range(8), in order.
#include <numeric>
#include <vector>

#include "examples/py.h"
#include "pool/executor.h"
#include "spawn/process.h"

int Sq(int x) { return x * x; }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<int> xs(8);
  std::iota(xs.begin(), xs.end(), 0);
  auto ex = mproc::ProcessPoolExecutor::Create().value();
  auto results = ex->Map(Sq, xs).value();
  std::vector<int> out;
  for (auto& r : results) out.push_back(r.value());
  py::Print(out);
}
