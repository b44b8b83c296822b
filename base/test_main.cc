// The main() of every mproc test binary: gtest plus a leak check after each test.
//
// A test fails when it leaves a descriptor open that was not open before it ran, or leaves a
// child process behind (running or a zombie). See base/leak_checker.h. The check runs before
// gtest prints the test's result, so the failure is reported on the test that leaked.
//
// spawn/ extends this main so that exec'd children reach mproc::Init first.

#include <cstdio>

#include "base/leak_checker.h"
#include "base/test_main.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

class LeakCheckListener : public ::testing::EmptyTestEventListener {
 public:
  void OnTestStart(const ::testing::TestInfo&) override { checker_.Snapshot(); }
  void OnTestEnd(const ::testing::TestInfo&) override {
    for (const std::string& problem : checker_.CheckAndCleanUp()) {
      ADD_FAILURE() << "mproc leak check: " << problem;
    }
  }

 private:
  LeakChecker checker_;
};

}  // namespace

int RunTestMain(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // End events run in reverse order of registration: appended last, the leak check runs
  // before the result printer reports the test.
  ::testing::UnitTest::GetInstance()->listeners().Append(new LeakCheckListener);
  std::fflush(nullptr);
  return RUN_ALL_TESTS();
}

}  // namespace mproc
