// MpiExecutor under a real mpirun: each case is one launch (bounded in time) of a program in
// mpi/testing/, judged by its exit code and output.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mproc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Scratch() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t != nullptr ? t : "/tmp";
}

// The environment a single container needs (README, "past one machine").
std::vector<std::string> MpiEnv() {
  std::vector<std::string> env = testing::EnvForNestedTest();
  env.push_back("OMPI_ALLOW_RUN_AS_ROOT=1");
  env.push_back("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1");
  env.push_back("OMPI_MCA_rmaps_base_oversubscribe=1");
  // Open MPI's session directory holds Unix sockets, whose paths must stay short.
  env.push_back("TMPDIR=/tmp");
  // Under --config=asan: Open MPI's own allocations live until exit; its components stay
  // loaded so that a leak's stack names them.
  env.push_back("OMPI_MCA_mca_base_component_disable_dlclose=1");
  // Their frames have no frame pointers: unwind slowly, or no stack reaches them.
  env.push_back("LSAN_OPTIONS=fast_unwind_on_malloc=0:suppressions=" +
                testing::Runfile("mpi/testing/lsan_mpi.supp"));
  return env;
}

testing::ProgramOutcome Mpirun(std::vector<std::string> args, int limit_s = 120) {
  std::vector<std::string> argv = {"timeout", "-k",    "5",   std::to_string(limit_s - 10),
                                   "mpirun",  "--mca", "pml", "ob1"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::vector<std::string> env = MpiEnv();
  testing::ProgramOutcome o = testing::RunProgram(argv, Scratch(), limit_s, &env);
  return o;
}

std::string Bin(const char* name) { return testing::Runfile(absl::StrCat("mpi/", name)); }

// The parity cases (mpi/testing/executor_scenarios.cc) on rank 0, ranks 1 and 2 serving, over
// shared memory.
TEST(MpiExecutorTest, ParityCasesUnderThreeRanks) {
  testing::ProgramOutcome o = Mpirun({"-n", "3", Bin("executor_scenarios")}, 240);
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_THAT(o.out, HasSubstr("[  PASSED  ]"));
  EXPECT_THAT(o.out, Not(HasSubstr("[  FAILED  ]")));
}

// The same over TCP only, the path that crosses hosts.
TEST(MpiExecutorTest, OverTcpTheWayAcrossHosts) {
  testing::ProgramOutcome o =
      Mpirun({"--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo", "-n", "3",
              Bin("executor_scenarios"),
              "--gtest_filter=*.HandshakeNamesEachWorkerRank:*Submit*:*Map*:*LargeMessages*"},
             240);
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_THAT(o.out, HasSubstr("[  PASSED  ] 5 tests"));
}

// Launch (a) as a user writes it: every rank calls MpiInit; the workers never get past it.
TEST(MpiExecutorTest, StaticLaunchMapsOverEveryWorkerRank) {
  testing::ProgramOutcome o = Mpirun({"-n", "3", Bin("launch_modes"), "static", "200"});
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  // sum of i*i for i < 200, printed once (by rank 0 only), over 2 worker ranks.
  EXPECT_EQ(o.out, "sum=2646700 ranks=2\n") << o.err;
}

// A worker running another program is refused at Create, naming its rank and both programs.
TEST(MpiExecutorTest, AWorkerRunningAnotherProgramIsRefused) {
  testing::ProgramOutcome o = Mpirun(
      {"-n", "1", Bin("launch_modes"), "refused", ":", "-n", "2", Bin("executor_scenarios")});
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_THAT(o.out, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(o.out, HasSubstr("runs a different program"));
  EXPECT_THAT(o.out, HasSubstr("rank 1"));
}

// Workers of another build (another wire version: here made to say 99) refuse the hello in a
// form every version keeps, and Create fails naming the rank and both versions. Before, such
// a worker took the hello for a malformed message and the job was aborted.
TEST(MpiExecutorTest, AWorkerOfAnotherWireVersionIsRefused) {
  testing::ProgramOutcome o =
      Mpirun({"-n", "1", Bin("launch_modes"), "refused", ":", "-n", "2", "env",
              "MPROC_MPI_WIRE_VERSION_FOR_TEST=99", Bin("launch_modes"), "static", "1"});
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_THAT(o.out, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(o.out, HasSubstr("wire version 99, this program 2"));
  EXPECT_THAT(o.out, HasSubstr("rank 1"));
}

// Launch (b): an SPMD code hands a communicator and a root; the others serve and go on.
TEST(MpiExecutorTest, CreateOnCommServesAnyRootAndReturnsTheOthers) {
  testing::ProgramOutcome o = Mpirun({"-n", "3", Bin("launch_modes"), "comm"});
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_THAT(o.out, HasSubstr("root 2: sum=328350 ranks=2\n"));
  EXPECT_THAT(o.out, HasSubstr("root 0: sum=328350 ranks=2\n"));
}

// Rank death where the job survives it (--enable-recovery): the executor breaks within the
// heartbeat timeout, every unfinished Future failing ABORTED and naming the rank and host;
// the program then ends (MPI_Abort at exit: a dead rank cannot take part in finalizing).
TEST(MpiExecutorTest, ARankKilledUnderRecoveryBreaksTheExecutorNamingIt) {
  testing::ProgramOutcome o =
      Mpirun({"--enable-recovery", "-n", "3", Bin("launch_modes"), "death"});
  ASSERT_NE(o.exit_code, -1) << "hung";
  for (const char* which : {"killer: ", "slow: ", "later: "}) {
    EXPECT_THAT(o.out, HasSubstr(absl::StrCat(which, "ABORTED: BrokenExecutor: rank ")))
        << o.out << o.err;
  }
  EXPECT_THAT(o.out, HasSubstr("(host "));
  EXPECT_THAT(o.out, HasSubstr("sent no heartbeat"));
}

// Under Open MPI's defaults a dead rank ends the whole job: mpirun reports it and exits
// non-zero, promptly, with nothing left running.
TEST(MpiExecutorTest, ARankKilledUnderDefaultsEndsTheJob) {
  testing::ProgramOutcome o = Mpirun({"-n", "3", Bin("launch_modes"), "death"});
  EXPECT_NE(o.exit_code, -1) << "hung";
  EXPECT_NE(o.exit_code, 0) << o.out << o.err;
  EXPECT_THAT(o.err, HasSubstr("signal 9")) << o.err;
}

// A task past task_timeout loses its worker: the executor breaks, saying so.
TEST(MpiExecutorTest, ATaskPastTheTaskTimeoutBreaksTheExecutor) {
  testing::ProgramOutcome o = Mpirun({"-n", "3", Bin("launch_modes"), "hang"});
  ASSERT_NE(o.exit_code, -1) << "hung";
  EXPECT_THAT(o.out, HasSubstr("hung: ABORTED: BrokenExecutor: rank "));
  EXPECT_THAT(o.out, HasSubstr("did not answer a task within the task timeout of 500ms"));
}

// The hybrid example: each worker rank maps its tasks over a local Pool of spawned processes.
TEST(MpiExecutorTest, HybridExampleUsesALocalPoolOnEachRank) {
  testing::ProgramOutcome o = Mpirun({"-n", "3", Bin("hybrid_example"), "20000"});
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_EQ(o.out, "sum=2666466670000 direct=2666466670000 ok\n") << o.err;
}

// Launch (c): a singleton (no mpirun) spawns its workers; they exit when the executor is done.
TEST(MpiExecutorTest, ASingletonSpawnsItsWorkers) {
  const std::vector<std::string> env = MpiEnv();
  testing::ProgramOutcome o = testing::RunProgram(
      {"timeout", "-k", "5", "110", Bin("launch_modes"), "spawn", "100"}, Scratch(), 120, &env);
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_EQ(o.out, "sum=328350 ranks=2\n") << o.err;
}

// Launch (c) with workers that miss the handshake (a slow initializer): Create fails, and the
// workers, once their initializer returns, leave while the root lives on. Before, they waited
// in MPI_Comm_disconnect for a root that never disconnects (it gives up on them), until the
// root's end made them abort.
TEST(MpiExecutorTest, SpawnedWorkersThatMissTheHandshakeDoNotLinger) {
  const std::vector<std::string> env = MpiEnv();
  testing::ProgramOutcome o = testing::RunProgram(
      {"timeout", "-k", "5", "110", Bin("launch_modes"), "slow_spawn"}, Scratch(), 120, &env);
  EXPECT_EQ(o.exit_code, 0) << o.out << o.err;
  EXPECT_THAT(o.out, HasSubstr("create: DEADLINE_EXCEEDED")) << o.err;
  EXPECT_THAT(o.out, HasSubstr("workers left: 0\n")) << o.err;
  EXPECT_THAT(o.err, Not(HasSubstr("MPI_Comm_disconnect")));
}

}  // namespace
}  // namespace mproc
