// Seed 000 §59.16: four processes each add one to a shared int under its lock.
#include <vector>

#include "examples/py.h"
#include "spawn/process.h"
#include "sync/lock.h"
#include "sync/value.h"

void Worker(mproc::Value<int> counter) {
  mproc::LockGuard g(counter.GetLock());
  counter.Set(counter.Get() + 1);
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto counter = mproc::Value<int>::Create(0).value();  // Value("i", 0)
  std::vector<mproc::Process> processes;
  for (int i = 0; i < 4; ++i) processes.emplace_back(Worker, counter);
  for (auto& p : processes) (void)p.Start();
  for (auto& p : processes) (void)p.Join();
  py::Print(counter.Get());
}
