#include "base/clone3.h"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "base/features.h"
#include "gtest/gtest.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace mproc {
namespace {

struct Ctx {
  std::atomic<int> touched{0};
  int code = 0;
};

int ChildMain(void* p) {
  auto* c = static_cast<Ctx*>(p);
  c->touched.store(1);  // shared memory under CLONE_VM
  return c->code;
}

alignas(64) char g_stack[64 << 10];

TEST(Clone3Test, VforkChildRunsOnItsStackAndExits) {
  if (!HasFeature(Feature::kClone3)) GTEST_SKIP() << "clone3 unavailable here";
  for (int code : {0, 7, 255}) {
    Ctx ctx;
    ctx.code = code;
    int pidfd = -1;
    clone_args args = {};
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uintptr_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    args.stack = reinterpret_cast<uintptr_t>(g_stack);
    args.stack_size = sizeof(g_stack);
    long pid = Clone3(&args, ChildMain, &ctx);
    ASSERT_GT(pid, 0) << "clone3: errno " << -pid;
    // CLONE_VFORK: by now the child has exited.
    EXPECT_EQ(ctx.touched.load(), 1);
    ASSERT_GE(pidfd, 0);
    siginfo_t si = {};
    ASSERT_EQ(::waitid(static_cast<idtype_t>(P_PIDFD), pidfd, &si, WEXITED), 0);
    EXPECT_EQ(si.si_pid, pid);
    EXPECT_EQ(si.si_code, CLD_EXITED);
    EXPECT_EQ(si.si_status, code);
    ::close(pidfd);
  }
}

TEST(Clone3Test, BadArgumentsReturnNegativeErrno) {
  if (!HasFeature(Feature::kClone3)) GTEST_SKIP() << "clone3 unavailable here";
  clone_args args = {};
  args.flags = CLONE_VFORK;
  args.exit_signal = 1u << 10;  // not a valid signal
  args.stack = reinterpret_cast<uintptr_t>(g_stack);
  args.stack_size = sizeof(g_stack);
  Ctx ctx;
  EXPECT_EQ(Clone3(&args, ChildMain, &ctx), -EINVAL);
}

}  // namespace
}  // namespace mproc
