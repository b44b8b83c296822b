// Seed 000 §59.18: a list kept in a manager process; the child appends through its proxy.
#include <string>

#include "examples/py.h"
#include "manager/manager.h"
#include "spawn/process.h"

void Worker(mproc::ListProxy<std::string> shared_list) { (void)shared_list.Append("x"); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto manager = mproc::Manager::Start().value();  // shut down when `manager` goes away
  auto xs = manager->List<std::string>().value();
  mproc::Process p(Worker, xs);
  if (!p.Start().ok() || !p.Join().ok()) return 1;
  py::Print(xs.ToVector().value());
}
