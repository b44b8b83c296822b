// Seed 000 §59.10: a Process with arguments, then its exit code.
#include <string>

#include "examples/py.h"
#include "spawn/process.h"

void Run(std::string name) { py::Print("hello", name); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p(Run, std::string("worker-1"));
  if (!p.Start().ok() || !p.Join().ok()) return 1;
  py::Print(*p.exitcode());
}
