// Seed 003, "Multiple processes": each child prints its name, its pid and its parent's pid.
// mproc::ParentPid() is the process that created it, whatever the start method (under
// forkserver the kernel's parent, os.getppid(), is the fork server).
#include <unistd.h>

#include <string>
#include <vector>

#include "examples/py.h"
#include "spawn/process.h"

void Worker() {
  py::Print("Process: " + mproc::CurrentProcess().name);
  py::Print("PID: " + std::to_string(::getpid()));
  py::Print("Parent PID: " + std::to_string(mproc::ParentPid()));
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<mproc::Process> processes;
  for (int i = 0; i < 4; ++i) {
    processes.emplace_back(Worker).SetName("Worker-" + std::to_string(i));
  }
  for (auto& p : processes) (void)p.Start();
  for (auto& p : processes) (void)p.Join();
}
