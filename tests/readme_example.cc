// The Process example of README.md, verbatim in substance: a test that it builds and works.
#include "spawn/process.h"
#include "sync/lock.h"
#include "sync/value.h"

int Work(mproc::Lock lock, mproc::Value<int64_t> total, int n) {  // a free function
  for (int i = 0; i < n; ++i) {
    mproc::LockGuard g(lock);
    total.Set(total.Get() + 1);
  }
  return 0;  // the exit code
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);  // first line: spawned / fork-server children run their target here
  auto lock = mproc::Lock::Create().value();
  auto total = mproc::Value<int64_t>::Create(0).value();
  for (auto method : {mproc::StartMethod::kForkServer, mproc::StartMethod::kSpawn,
                      mproc::StartMethod::kFork}) {
    total.Set(0);
    mproc::Process p(Work, lock, total, 1000);
    p.SetStartMethod(method);
    if (!p.Start().ok() || !p.Join().ok()) return 1;
    if (p.exitcode() != 0 || total.Get() != 1000) return 2;
  }
  return 0;
}
