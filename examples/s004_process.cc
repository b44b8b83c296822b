// Seed 004, multiprocessing.Process.
#include <unistd.h>

#include <string>

#include "examples/py.h"
#include "spawn/process.h"

void Greet(std::string name) {
  py::Print("Hello " + name + " from process " + std::to_string(::getpid()));
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p(Greet, std::string("Alice"));
  if (!p.Start().ok() || !p.Join().ok()) return 1;
  // Hello Alice from process 12345
}
