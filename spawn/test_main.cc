// The main() of gtest binaries that start spawn children: a spawned child runs its target
// (mproc::Init) and never reaches the tests; the parent runs them under the leak checker.
#include "base/test_main.h"
#include "spawn/process.h"

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  return mproc::RunTestMain(argc, argv);
}
