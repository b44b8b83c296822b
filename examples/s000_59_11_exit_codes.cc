// Seed 000 §59.11: the child's exit status reaches the parent (sys.exit(3) is exit(3), or
// a target returning 3).
#include <cstdlib>

#include "examples/py.h"
#include "spawn/process.h"

void Worker() { std::exit(3); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p(Worker);
  if (!p.Start().ok() || !p.Join().ok()) return 1;
  py::Print(*p.exitcode());
}
