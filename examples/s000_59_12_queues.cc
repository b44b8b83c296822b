// Seed 000 §59.12: a child puts a string on a Queue and the parent gets it.
#include <string>

#include "examples/py.h"
#include "ipc/queue.h"
#include "spawn/process.h"

void Worker(mproc::Queue<std::string> q) { (void)q.Put("done"); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto q = mproc::Queue<std::string>::Create().value();
  mproc::Process p(Worker, q);
  if (!p.Start().ok()) return 1;
  py::Print(q.Get().value());
  if (!p.Join().ok()) return 1;
}
