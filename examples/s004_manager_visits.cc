// Seed 004, "Shared State with Manager": ten processes count visits in a managed dict.
// Python's `shared_data['visits'] += 1` is a get and a set, so racing processes lose visits;
// Update runs the increment in the server, one call, and all ten count.
#include <string>
#include <vector>

#include "examples/py.h"
#include "manager/manager.h"
#include "spawn/process.h"

void Worker(mproc::DictProxy<std::string, int> shared_data) {
  (void)shared_data.Update("visits", [](int& v) { return ++v; });
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto m = mproc::Manager::Start().value();
  auto data = m->Dict<std::string, int>({{"visits", 0}}).value();
  std::vector<mproc::Process> processes;
  for (int i = 0; i < 10; ++i) processes.emplace_back(Worker, data);
  for (auto& p : processes) (void)p.Start();
  for (auto& p : processes) (void)p.Join();
  py::Print("Total visits: " + std::to_string(data.Get("visits").value()));
  // Total visits: 10
}
