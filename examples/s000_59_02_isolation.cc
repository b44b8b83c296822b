// Seed 000 §59.2: the child appends to its own copy of x; the parent's stays empty.
#include <vector>

#include "examples/py.h"
#include "spawn/process.h"

std::vector<int> x;

void Worker() {
  x.push_back(1);
  py::Print("child:", x);
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p(Worker);
  if (!p.Start().ok() || !p.Join().ok()) return 1;
  py::Print("parent:", x);
}
