// Seed 000 §59.4: choosing the start method once, for the whole program, before any process
// starts. It prints nothing; a second, different choice would be FAILED_PRECONDITION, as
// CPython's RuntimeError("context has already been set").
#include "spawn/process.h"

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  return mproc::SetStartMethod(mproc::StartMethod::kSpawn).ok() ? 0 : 1;
}
