// A Queue, a Pipe and code references work from an atexit handler, after glibc destroyed the
// exiting thread's thread_local objects (base/thread_scratch.h): before, the handler's Put and
// Send used encode and take buffers whose memory those destructors had freed.
#include <cstdlib>
#include <string>

#include "base/test_util.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

TEST(ExitHandlerTest, QueuePipeAndCodeRefsWorkInAnAtexitHandler) {
  char dir[] = "/tmp/mproc-exit-handler-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  testing::ProgramOutcome o =
      testing::RunProgram({testing::Runfile("ipc/exit_handler_program")}, dir);
  ::rmdir(dir);
  EXPECT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(o.out, "ok\n") << o.err;
  EXPECT_EQ(o.err.find("Sanitizer"), std::string::npos) << o.err;
}

}  // namespace
}  // namespace mproc
