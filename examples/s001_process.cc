// Seed 001, "Example: Process": three processes, each printing its number.
#include <vector>

#include "examples/py.h"
#include "spawn/process.h"

void Worker(int n) { py::Print("worker", n); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(Worker, i);
  for (auto& p : ps) (void)p.Start();
  for (auto& p : ps) (void)p.Join();
}
