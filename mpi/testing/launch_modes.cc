// Small programs for mpi/executor_test.cc, one per launch mode, chosen by argv[1]:
//
//   static N         launch (a), under `mpirun -n K`: rank 0 maps Square over 0..N-1 and prints
//                    "sum=<sum of squares> ranks=<distinct worker pids>"
//   refused          launch (a), rank 0 only: expects Create to refuse workers that run another
//                    program; prints the error and exits 0 when it did
//   comm             launch (b), under `mpirun -n 3`: initializes MPI itself and creates
//                    executors with CreateOnComm over MPI_COMM_WORLD, root 2 and then root 0;
//                    each root prints "root <r>: sum=<...>"
//   spawn N          launch (c), a singleton: spawns N workers and maps over them; prints
//                    "sum=<...> ranks=<distinct worker pids>"
//   death            launch (a): a task SIGKILLs its worker while another runs long; prints
//                    each Future's status ("killer: ...", "slow: ...", "later: ...")
//   hang             launch (a): a task runs past task_timeout; prints "hung: <status>"
//   slow_spawn       launch (c): spawned workers whose initializer outlasts the handshake;
//                    prints Create's error, then "workers left: <n>" once they are gone (or
//                    after 20 s)
#include <dirent.h>
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/proc_stat.h"
#include "mpi/executor.h"

namespace {

int64_t Square(int64_t x) { return x * x; }
int KillSelf(int) {
  ::raise(SIGKILL);
  return 0;
}
int SleepMs(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}
int Pid(int) { return ::getpid(); }
void SleepInit(int ms) { ::usleep(static_cast<useconds_t>(ms) * 1000); }

// Processes on this host started as spawned workers (their argv carries the flag), zombies
// aside.
int SpawnedWorkers() {
  int n = 0;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream cmd(std::string("/proc/") + e->d_name + "/cmdline");
    std::string argv((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    if (argv.find("--mproc-mpi-worker") == std::string::npos) continue;
    const mproc::TaskStat st = mproc::ReadTaskStat(static_cast<pid_t>(std::atoi(e->d_name)));
    if (st.found == mproc::TaskStat::kFound && !mproc::ZombieState(st.state)) ++n;
  }
  ::closedir(d);
  return n;
}

int Fail(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
  return 1;
}

// Maps Square over 0..n-1 and Pid over 4n items; prints the sum and the worker count.
int Work(mproc::MpiExecutor& ex, int64_t n, const std::string& prefix) {
  std::vector<int64_t> in(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) in[static_cast<size_t>(i)] = i;
  absl::StatusOr<std::vector<absl::StatusOr<int64_t>>> r = ex.Map(Square, in, 16);
  if (!r.ok()) return Fail(r.status(), "Map");
  int64_t sum = 0;
  for (auto& v : *r) {
    if (!v.ok()) return Fail(v.status(), "a Square");
    sum += *v;
  }
  absl::StatusOr<std::vector<absl::StatusOr<int>>> pids =
      ex.Map(Pid, std::vector<int>(static_cast<size_t>(4 * n), 0));
  if (!pids.ok()) return Fail(pids.status(), "Map");
  std::set<int> seen;
  for (auto& p : *pids) {
    if (!p.ok()) return Fail(p.status(), "a Pid");
    if (*p == ::getpid()) return Fail(absl::InternalError("a task ran on the root"), "Pid");
    seen.insert(*p);
  }
  std::printf("%ssum=%lld ranks=%zu\n", prefix.c_str(), static_cast<long long>(sum), seen.size());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "comm") {
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) return 2;
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int rc = 0;
    for (int root : {2, 0}) {
      absl::StatusOr<std::unique_ptr<mproc::MpiExecutor>> ex =
          mproc::MpiExecutor::CreateOnComm(MPI_COMM_WORLD, root);
      if (!ex.ok()) {
        rc = Fail(ex.status(), "CreateOnComm");
        break;
      }
      if (*ex == nullptr) {
        if (rank == root) rc = Fail(absl::InternalError("the root got no executor"), "root");
        continue;  // served root's executor until it shut down
      }
      rc |= Work(**ex, 100, "root " + std::to_string(root) + ": ");
    }
    MPI_Finalize();
    return rc;
  }
  if (absl::Status s = mproc::MpiInit(&argc, &argv); !s.ok()) return Fail(s, "MpiInit");
  if (mode == "static" || mode == "spawn") {
    const int64_t n = argc > 2 ? std::atoll(argv[2]) : 100;
    mproc::MpiExecutorOptions o;
    if (mode == "spawn") o.spawn_workers = 2;
    absl::StatusOr<std::unique_ptr<mproc::MpiExecutor>> ex = mproc::MpiExecutor::Create(o);
    if (!ex.ok()) return Fail(ex.status(), "Create");
    return Work(**ex, n, "");
  }
  if (mode == "slow_spawn") {
    // Spawned workers whose initializer outlasts the handshake: Create gives up on them.
    mproc::MpiExecutorOptions o;
    o.spawn_workers = 2;
    o.handshake_timeout = absl::Milliseconds(300);
    absl::StatusOr<std::unique_ptr<mproc::MpiExecutor>> ex =
        mproc::MpiExecutor::Create(o, SleepInit, 2000);
    std::printf("create: %s\n", ex.status().ToString().c_str());
    // Once their initializer returns, the workers hear that the executor is gone and leave,
    // while this process lives on.
    int left = SpawnedWorkers();
    for (int i = 0; i < 400 && left > 0; ++i) {
      ::usleep(50'000);
      left = SpawnedWorkers();
    }
    std::printf("workers left: %d\n", left);
    std::fflush(stdout);
    return 0;
  }
  if (mode == "death") {
    mproc::MpiExecutorOptions o;
    o.heartbeat_timeout = absl::Seconds(1);
    o.tasks_per_rank = 1;
    absl::StatusOr<std::unique_ptr<mproc::MpiExecutor>> ex = mproc::MpiExecutor::Create(o);
    if (!ex.ok()) return Fail(ex.status(), "Create");
    if (!(*ex)->Submit(SleepMs, 1).Result().ok()) return 1;
    mproc::Future<int> slow = (*ex)->Submit(SleepMs, 20000);
    mproc::Future<int> killer = (*ex)->Submit(KillSelf, 0);
    std::printf("killer: %s\n", killer.Exception(absl::Seconds(60)).ToString().c_str());
    std::printf("slow: %s\n", slow.Exception(absl::Seconds(60)).ToString().c_str());
    std::printf("later: %s\n",
                (*ex)->Submit(SleepMs, 1).Exception(absl::Seconds(60)).ToString().c_str());
    std::fflush(stdout);
    return 0;
  }
  if (mode == "hang") {
    mproc::MpiExecutorOptions o;
    o.task_timeout = absl::Milliseconds(500);
    absl::StatusOr<std::unique_ptr<mproc::MpiExecutor>> ex = mproc::MpiExecutor::Create(o);
    if (!ex.ok()) return Fail(ex.status(), "Create");
    if (!(*ex)->Submit(SleepMs, 100).Result().ok()) return 1;  // within the limit
    std::printf("hung: %s\n",
                (*ex)->Submit(SleepMs, 5000).Exception(absl::Seconds(60)).ToString().c_str());
    std::fflush(stdout);
    return 0;
  }
  if (mode == "refused") {
    absl::StatusOr<std::unique_ptr<mproc::MpiExecutor>> ex = mproc::MpiExecutor::Create();
    if (ex.ok()) return Fail(absl::InternalError("Create accepted another program"), "refused");
    std::printf("refused: %s\n", ex.status().ToString().c_str());
    return absl::IsFailedPrecondition(ex.status()) ? 0 : 1;
  }
  std::fprintf(stderr, "usage: launch_modes static|refused|comm|spawn [N]\n");
  return 2;
}
