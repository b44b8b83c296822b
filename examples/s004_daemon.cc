// Seed 004, "Daemon Processes": a daemon child is terminated when the main program exits
// (and killed with it when the main program is SIGKILLed).
#include "absl/time/clock.h"
#include "examples/py.h"
#include "spawn/process.h"

void BackgroundWorker() {
  while (true) {
    py::Print("Working...");
    absl::SleepFor(absl::Seconds(5));
  }
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p(BackgroundWorker);
  p.SetDaemon(true);
  if (!p.Start().ok()) return 1;
  // Main program can continue
  // When main exits, daemon process is terminated
}
