// base/test_main.h — the body of mproc's shared test main (see test_main.cc).
#ifndef MPROC_BASE_TEST_MAIN_H_
#define MPROC_BASE_TEST_MAIN_H_

namespace mproc {
// Initialises gtest, installs the per-test fd and child-process leak check, runs all tests.
int RunTestMain(int argc, char** argv);
}  // namespace mproc

#endif  // MPROC_BASE_TEST_MAIN_H_
