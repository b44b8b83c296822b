#include "bench/report/mpi_peer.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace mproc::bench {
namespace {

// This environment, plus what mpirun needs in a single container: as root, Open MPI refuses
// to run without both OMPI_ALLOW_RUN_AS_ROOT variables; 3 ranks on a 2-CPU machine need
// oversubscription.
std::vector<std::string> MpirunEnv() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  if (::geteuid() == 0) {
    env.push_back("OMPI_ALLOW_RUN_AS_ROOT=1");
    env.push_back("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1");
  }
  env.push_back("OMPI_MCA_rmaps_base_oversubscribe=1");
  return env;
}

PeerRun RunUnderMpirun(std::vector<std::string> program, const std::string& version_prefix) {
  const std::string mpirun = FindOnPath("mpirun");
  if (mpirun.empty()) {
    PeerRun run;
    run.skipped = "mpirun not found (Open MPI is not installed: tools/bootstrap.sh installs it)";
    return run;
  }
  std::vector<std::string> args = {mpirun, "--mca", "pml", "ob1", "-n", "3"};
  args.insert(args.end(), program.begin(), program.end());
  std::fprintf(stderr, "running: %s\n", absl::StrJoin(args, " ").c_str());
  const std::vector<std::string> env = MpirunEnv();
  return RunPeerProgram(args, &env, version_prefix);
}

}  // namespace

PeerRun RunMpiExecutorRows(bool quick) {
  const std::string bin = FindRunfile("mpi/mpi_rows");
  if (bin.empty()) {
    PeerRun run;
    run.skipped = "mpi/mpi_rows was not built (Open MPI was not installed when the report was)";
    return run;
  }
  std::vector<std::string> program = {bin};
  if (quick) program.push_back("--quick");
  return RunUnderMpirun(program, "");
}

PeerRun RunMpi4pyRows(const std::string& python, bool quick) {
  const std::string py = FindOnPath(python);
  const std::string script = FindRunfile("bench/peers/mpi4py_futures.py");
  PeerRun run;
  if (py.empty()) {
    run.skipped = absl::StrCat(python, " not found");
    return run;
  }
  if (script.empty()) {
    run.skipped = "bench/peers/mpi4py_futures.py not found";
    return run;
  }
  std::vector<std::string> program = {py, "-m", "mpi4py.futures", script};
  if (quick) program.push_back("--quick");
  run = RunUnderMpirun(program, "");
  if (run.rows.empty() && run.skipped.empty()) {
    run.skipped = absl::StrCat(python,
                               " -m mpi4py.futures printed no rows (is python3-mpi4py "
                               "installed for it?)");
  }
  return run;
}

}  // namespace mproc::bench
