// Seed 004, multiprocessing.Lock, as the seed wrote it: the counter is a global of each
// process, so the children count in their own copies and the parent prints 0, as Python does
// (the seed's comment says 2000). The lock is a namespace-scope object like the seed's
// module-level one: each process image makes its own, a fork child inherits its parent's.
// To share the count, pass a Value (seed 004's next example) or the lock and a Value.
#include <map>
#include <string>

#include "examples/py.h"
#include "spawn/process.h"
#include "sync/lock.h"

std::map<std::string, int> counter = {{"value", 0}};
mproc::Lock lock = mproc::Lock::Create().value();

void Increment(int n) {
  for (int i = 0; i < n; ++i) {
    mproc::LockGuard g(lock);
    counter["value"] += 1;
  }
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p1(Increment, 1000);
  mproc::Process p2(Increment, 1000);
  (void)p1.Start();
  (void)p2.Start();
  (void)p1.Join();
  (void)p2.Join();
  py::Print(counter["value"]);
}
