// Seed 000 §59.1: a child process runs worker() and the parent waits for it.
#include "examples/py.h"
#include "spawn/process.h"

void Worker() { py::Print("child process"); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);  // where a spawned or fork-server child runs its target
  mproc::Process p(Worker);
  if (!p.Start().ok() || !p.Join().ok()) return 1;
}
