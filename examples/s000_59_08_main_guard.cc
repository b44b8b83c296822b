// Seed 000 §59.8: the main-module rule. mproc::Init is the guard: a spawned or fork-server
// child runs its target inside Init and exits there, so main's own code runs only in the
// program that was started by hand, and a program that forgets Init is told so at Start.
#include "examples/py.h"
#include "spawn/process.h"

void Worker() { py::Print("work"); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p(Worker);
  if (!p.Start().ok() || !p.Join().ok()) return 1;
}
