// Seed 002, multiprocessing.Process: named processes, is_alive and exit codes.
#include <unistd.h>

#include <string>

#include "absl/time/clock.h"
#include "examples/py.h"
#include "spawn/process.h"

void Work(int n) {
  const std::string name = mproc::CurrentProcess().name;
  py::Print("[" + name + "] PID=" + std::to_string(::getpid()) + " start with n=" + std::to_string(n));
  absl::SleepFor(absl::Seconds(1));
  py::Print("[" + name + "] done");
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p1(Work, 10), p2(Work, 20);
  p1.SetName("Worker-1");
  p2.SetName("Worker-2");
  (void)p1.Start();
  (void)p2.Start();
  py::Print("Alive?", p1.IsAlive(), p2.IsAlive());
  (void)p1.Join();
  (void)p2.Join();
  py::Print("Exit codes:", *p1.exitcode(), *p2.exitcode());
}
