// Seed 002, "forkserver": the whole program's start method, chosen before any process starts.
#include <string>

#include "examples/py.h"
#include "spawn/process.h"

void Worker(int x) { py::Print("Worker received " + std::to_string(x)); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  if (!mproc::SetStartMethod(mproc::StartMethod::kForkServer).ok()) return 1;
  mproc::Process p(Worker, 123);
  if (!p.Start().ok() || !p.Join().ok()) return 1;
}
