// Seed 002, "Pool.apply (Blocking, one task at a time)".
#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int Cube(int x) { return x * x * x; }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto pool = mproc::Pool::Create({.processes = 3}).value();
  py::Print("Sending task...");
  int result = pool->Apply(Cube, 5).value();
  // BLOCKS until done
  py::Print("Got result:", result);
  // Prints 125
  py::Print("Main continues AFTER task is done.");
}
