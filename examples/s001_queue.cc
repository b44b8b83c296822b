// Seed 001, "queue ipc": children put their squares on a Queue; the parent collects them.
#include <vector>

#include "examples/py.h"
#include "ipc/queue.h"
#include "spawn/process.h"

void Worker(mproc::Queue<int> q, int n) { (void)q.Put(n * n); }  // send result to parent

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto q = mproc::Queue<int>::Create().value();  // shared queue
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(Worker, q, i);  // children
  for (auto& p : ps) (void)p.Start();
  for (auto& p : ps) (void)p.Join();  // a Put is in shared memory when it returns: no deadlock
  std::vector<int> squares;
  for (size_t i = 0; i < ps.size(); ++i) squares.push_back(q.Get().value());
  py::Print(squares);  // collect squares
}
