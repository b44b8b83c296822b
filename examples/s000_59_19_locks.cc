// Seed 000 §59.19: four processes take turns in a critical section.
#include <vector>

#include "examples/py.h"
#include "spawn/process.h"
#include "sync/lock.h"

void Worker(mproc::Lock lock) {
  mproc::LockGuard g(lock);
  py::Print("critical section");
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto lock = mproc::Lock::Create().value();
  std::vector<mproc::Process> processes;
  for (int i = 0; i < 4; ++i) processes.emplace_back(Worker, lock);
  for (auto& p : processes) (void)p.Start();
  for (auto& p : processes) (void)p.Join();
}
