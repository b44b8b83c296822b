// Seed 004, multiprocessing.Array: a child negates a shared int array in place.
#include <vector>

#include "examples/py.h"
#include "spawn/process.h"
#include "sync/value.h"

std::vector<int> All(const mproc::Array<int>& arr) {  // arr[:]
  std::vector<int> out;
  for (size_t i = 0; i < arr.size(); ++i) out.push_back(arr[i]);
  return out;
}

void Negate(mproc::Array<int> arr) {
  for (size_t i = 0; i < arr.size(); ++i) arr[i] = -arr[i];
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto arr = mproc::Array<int>::Create({1, 2, 3, 4, 5}).value();  // array of 5 integers
  py::Print(All(arr));
  // [1, 2, 3, 4, 5]
  mproc::Process p(Negate, arr);
  if (!p.Start().ok() || !p.Join().ok()) return 1;
  py::Print(All(arr));
  // [-1, -2, -3, -4, -5]
}
