// Seed 003, "Creating Processes".
#include <string>

#include "examples/py.h"
#include "spawn/process.h"

void Worker(std::string name) { py::Print("Worker " + name + " starting"); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);  // required: spawned and fork-server children run their target here
  mproc::Process p(Worker, std::string("A"));
  if (!p.Start().ok()) return 1;
  (void)p.Join();  // wait for completion
}
