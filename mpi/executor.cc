#include "mpi/executor.h"

#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "base/status.h"
#include "pool/internal/orphans.h"

namespace mproc {
namespace {

using mpi_internal::CommEnd;
using mpi_internal::MpiStatus;

// The argument a spawned worker is started with (launch c).
constexpr char kSpawnedWorkerFlag[] = "--mproc-mpi-worker";

struct Launch {
  bool ready = false;              // MpiInit returned OK
  bool ours = false;               // MpiInit initialized MPI (and finalizes it at exit)
  MPI_Comm world = MPI_COMM_NULL;  // launch (a): the workers' communicator
  int rank = 0;
  int size = 1;
  std::atomic<bool> executor_open{false};  // launch (a): one executor at a time
};

Launch& TheLaunch() {
  static Launch* l = new Launch();
  return *l;
}

// Ends the whole MPI job from this process, saying why on stderr.
[[noreturn]] void AbortJob(const std::string& why) {
  std::fprintf(stderr, "mproc: %s; aborting the MPI job\n", why.c_str());
  std::fflush(nullptr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return
}

[[noreturn]] void ServeAndExit(MPI_Comm comm, bool disconnect) {
  bool root_disconnects = true;
  absl::Status s = mpi_internal::Serve(comm, 0, /*one_executor=*/false, &root_disconnects);
  if (!s.ok()) {
    // The client may be waiting on this rank for ever, and MPI_Finalize waits for every rank:
    // end the job, as a dead rank does.
    AbortJob(absl::StrCat("MPI worker: ", s.ToString()));
  }
  if (disconnect) {
    // Collective: only when the root disconnects too. It does not once it gave up on a rank;
    // then MPI_Finalize alone lets this process go (Open MPI's does: tested, while the root
    // lives on), where a disconnect would wait for the root until it ends.
    if (root_disconnects) (void)MPI_Comm_disconnect(&comm);
  } else {
    (void)MPI_Comm_free(&comm);
  }
  (void)MPI_Finalize();
  std::fflush(nullptr);
  std::exit(s.ok() ? 0 : 1);
}

// Rank 0 of a static launch, as MPI finalizes (MPI_Finalize deletes MPI_COMM_SELF's
// attributes first, whoever calls it: the program, or FinalizeAtExit): sends every worker
// kExit, so that its own MPI_Finalize, which waits for every rank, can proceed.
int ReleaseWorkersAtFinalize(MPI_Comm, int, void*, void*) {
  Launch& l = TheLaunch();
  // An executor dropped from its own done callback finishes its work first (its thread makes
  // MPI calls until then).
  pool_internal::WaitForOrphans();
  if (mpi_internal::MpiUnrecoverable()) {
    // Some rank is gone, hung, or owed answers no one will take (this covers a launch's
    // workers out of step): MPI_Finalize would wait for it for ever.
    AbortJob("an MpiExecutor lost ranks or gave up on them, and MPI_Finalize would wait for them");
  }
  if (mpi_internal::LiveEngines() > 0) {
    // Its engine thread may be inside an MPI call: nothing can be finalized safely.
    AbortJob("MPI is finalized (or the program exits) with an MpiExecutor still open");
  }
  if (l.world == MPI_COMM_NULL) return MPI_SUCCESS;
  for (int r = 1; r < l.size; ++r) {
    (void)MPI_Send(nullptr, 0, MPI_BYTE, r, mpi_internal::kExit, l.world);
  }
  (void)MPI_Comm_free(&l.world);
  return MPI_SUCCESS;
}

// Runs ReleaseWorkersAtFinalize when MPI finalizes, whoever finalizes it: an attribute of
// MPI_COMM_SELF, whose delete callbacks MPI_Finalize runs first. Once per process.
absl::Status EnsureFinalizeHook() {
  static Mutex mu;
  static bool done = false;
  MutexLock lock(&mu);
  if (done) return absl::OkStatus();
  int key = MPI_KEYVAL_INVALID;
  MPROC_RETURN_IF_ERROR(MpiStatus(
      MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, ReleaseWorkersAtFinalize, &key, nullptr),
      "MPI_Comm_create_keyval"));
  MPROC_RETURN_IF_ERROR(
      MpiStatus(MPI_Comm_set_attr(MPI_COMM_SELF, key, nullptr), "MPI_Comm_set_attr"));
  done = true;
  return absl::OkStatus();
}

// At exit: finalizes MPI when MpiInit initialized it (the program finalizes what it
// initialized itself), which runs the hook above.
void FinalizeAtExit() {
  // An executor dropped from its own done callback still makes MPI calls until its work is
  // done: MPI_Finalize may not start before (MPI_THREAD_SERIALIZED allows one caller at a time).
  pool_internal::WaitForOrphans();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && TheLaunch().ours) (void)MPI_Finalize();
}

absl::Status RequireThreadLevel() {
  int provided = MPI_THREAD_SINGLE;
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Query_thread(&provided), "MPI_Query_thread"));
  if (provided < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(
        "MpiExecutor: MPI was initialized below MPI_THREAD_SERIALIZED; initialize it with "
        "MPI_Init_thread(MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE), or call MpiInit");
  }
  // Below MPI_THREAD_MULTIPLE one thread may call MPI at a time: a live executor's engine
  // thread is that thread, so no second executor may start (its set-up calls MPI here).
  if (provided < MPI_THREAD_MULTIPLE && mpi_internal::LiveEngines() > 0) {
    return absl::FailedPreconditionError(
        "MpiExecutor: MPI was initialized with MPI_THREAD_SERIALIZED and another executor is "
        "open: one at a time, or initialize MPI with MPI_THREAD_MULTIPLE");
  }
  return absl::OkStatus();
}

// Creates run one at a time in this process: two MPI_Comm_spawn on MPI_COMM_SELF at once
// would be erroneous even under MPI_THREAD_MULTIPLE.
Mutex g_create_mu;

std::string ExePath() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

mpi_internal::EngineOptions EngineFor(const MpiExecutorOptions& options, std::string initializer) {
  mpi_internal::EngineOptions e;
  e.initializer = std::move(initializer);
  e.tasks_per_rank = options.tasks_per_rank;
  e.max_message_bytes = options.max_message_bytes;
  e.handshake_timeout = options.handshake_timeout;
  e.heartbeat_timeout = options.heartbeat_timeout;
  e.task_timeout = options.task_timeout;
  return e;
}

}  // namespace

absl::Status MpiInit(int* argc, char*** argv) {
  Launch& l = TheLaunch();
  if (l.ready) return absl::OkStatus();
  int initialized = 0;
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Initialized(&initialized), "MPI_Initialized"));
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    MPROC_RETURN_IF_ERROR(
        MpiStatus(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread"));
    l.ours = true;
  }
  MPROC_RETURN_IF_ERROR(RequireThreadLevel());
  // Launch (c): started by an executor's MPI_Comm_spawn, with the flag (a program another
  // MPI parent spawned is not a worker of ours). The flag is taken out of argv.
  bool flagged = false;
  if (argc != nullptr && argv != nullptr && *argv != nullptr) {
    for (int i = 1; i < *argc; ++i) {
      if (std::strcmp((*argv)[i], kSpawnedWorkerFlag) != 0) continue;
      flagged = true;
      for (int k = i; k + 1 <= *argc; ++k) (*argv)[k] = (*argv)[k + 1];
      --*argc;
      break;
    }
  }
  MPI_Comm parent = MPI_COMM_NULL;
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Comm_get_parent(&parent), "MPI_Comm_get_parent"));
  if (parent != MPI_COMM_NULL && flagged) {
    // Launch (c): started by an executor's MPI_Comm_spawn.
    (void)MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
    ServeAndExit(parent, /*disconnect=*/true);
  }
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Comm_rank(MPI_COMM_WORLD, &l.rank), "MPI_Comm_rank"));
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Comm_size(MPI_COMM_WORLD, &l.size), "MPI_Comm_size"));
  if (l.size > 1) {
    // Launch (a): the workers' own communicator, so no message of the user's can match ours.
    MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Comm_dup(MPI_COMM_WORLD, &l.world), "MPI_Comm_dup"));
    (void)MPI_Comm_set_errhandler(l.world, MPI_ERRORS_RETURN);
    if (l.rank != 0) ServeAndExit(l.world, /*disconnect=*/false);
  }
  MPROC_RETURN_IF_ERROR(EnsureFinalizeHook());
  l.ready = true;
  std::atexit(FinalizeAtExit);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MpiExecutor>> MpiExecutor::CreateWith(Options options,
                                                                     std::string initializer) {
  Launch& l = TheLaunch();
  if (!l.ready) {
    return absl::FailedPreconditionError(
        "MpiExecutor::Create: call mproc::MpiInit(&argc, &argv) first, on every rank");
  }
  mpi_internal::EngineOptions e = EngineFor(options, std::move(initializer));
  MPROC_RETURN_IF_ERROR(mpi_internal::CheckOptions(e));
  MutexLock lock(&g_create_mu);
  MPROC_RETURN_IF_ERROR(RequireThreadLevel());
  if (options.spawn_workers < 0) {
    return absl::InvalidArgumentError("MpiExecutor: spawn_workers must not be negative");
  }
  if (options.spawn_workers > 0) {
    if (l.size > 1) {
      return absl::FailedPreconditionError(
          "MpiExecutor: spawn_workers is for a singleton; this launch already has worker ranks");
    }
    // Launch (c): new processes of this executable, which MpiInit turns into workers.
    const std::string exe = ExePath();
    char flag[sizeof(kSpawnedWorkerFlag)];
    std::copy(std::begin(kSpawnedWorkerFlag), std::end(kSpawnedWorkerFlag), flag);
    char* args[] = {flag, nullptr};
    std::vector<int> codes(static_cast<size_t>(options.spawn_workers), MPI_SUCCESS);
    MPI_Comm inter = MPI_COMM_NULL;
    MPROC_RETURN_IF_ERROR(
        MpiStatus(MPI_Comm_spawn(exe.c_str(), args, options.spawn_workers, MPI_INFO_NULL, 0,
                                 MPI_COMM_SELF, &inter, codes.data()),
                  "MPI_Comm_spawn"));
    (void)MPI_Comm_set_errhandler(inter, MPI_ERRORS_RETURN);
    for (int c : codes) {
      if (c != MPI_SUCCESS) {
        (void)MPI_Comm_disconnect(&inter);
        return MpiStatus(c, "MPI_Comm_spawn of a worker");
      }
    }
    e.comm = inter;
    e.comm_end = CommEnd::kDisconnect;
    e.exit_workers = true;
    for (int r = 0; r < options.spawn_workers; ++r) e.workers.push_back(r);
    MPROC_ASSIGN_OR_RETURN(std::unique_ptr<mpi_internal::Engine> engine,
                           mpi_internal::Engine::Start(std::move(e)));
    return std::unique_ptr<MpiExecutor>(new MpiExecutor(std::move(engine), false));
  }
  if (l.size == 1) {
    return absl::FailedPreconditionError(
        "MpiExecutor::Create: this process is a singleton with no worker ranks: launch it with "
        "`mpirun -n N`, or ask for workers with spawn_workers");
  }
  if (mpi_internal::KeptCommUnusable()) {
    return absl::FailedPreconditionError(
        "MpiExecutor::Create: an earlier executor gave up on answers this launch's workers "
        "owed it; they are out of step, and no executor may use them");
  }
  if (l.executor_open.exchange(true)) {
    return absl::FailedPreconditionError(
        "MpiExecutor::Create: another executor over this launch's workers is still open");
  }
  e.comm = l.world;
  e.comm_end = CommEnd::kKeep;
  e.exit_workers = false;
  for (int r = 1; r < l.size; ++r) e.workers.push_back(r);
  absl::StatusOr<std::unique_ptr<mpi_internal::Engine>> engine =
      mpi_internal::Engine::Start(std::move(e));
  if (!engine.ok()) {
    l.executor_open.store(false);
    return engine.status();
  }
  return std::unique_ptr<MpiExecutor>(new MpiExecutor(*std::move(engine), true));
}

absl::StatusOr<std::unique_ptr<MpiExecutor>> MpiExecutor::CreateOnCommWith(
    MPI_Comm comm, int root, Options options, std::string initializer) {
  int initialized = 0;
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Initialized(&initialized), "MPI_Initialized"));
  if (!initialized) {
    return absl::FailedPreconditionError(
        "MpiExecutor::CreateOnComm: MPI is not initialized (MPI_Init_thread, or MpiInit)");
  }
  mpi_internal::EngineOptions e = EngineFor(options, std::move(initializer));
  MPROC_RETURN_IF_ERROR(mpi_internal::CheckOptions(e));
  // The set-up's MPI calls, one Create at a time (under MPI_THREAD_SERIALIZED no engine runs
  // meanwhile: RequireThreadLevel); a worker rank lets go before it serves.
  MutexLock lock(&g_create_mu);
  MPROC_RETURN_IF_ERROR(RequireThreadLevel());
  MPROC_RETURN_IF_ERROR(EnsureFinalizeHook());
  int rank = 0;
  int size = 0;
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank"));
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Comm_size(comm, &size), "MPI_Comm_size"));
  if (root < 0 || root >= size) {
    return absl::InvalidArgumentError(absl::StrCat("MpiExecutor::CreateOnComm: root ", root,
                                                   " is not a rank of a ", size,
                                                   "-rank communicator"));
  }
  if (size < 2) {
    return absl::InvalidArgumentError(
        "MpiExecutor::CreateOnComm: the communicator has no rank besides the root");
  }
  MPI_Comm dup = MPI_COMM_NULL;
  MPROC_RETURN_IF_ERROR(MpiStatus(MPI_Comm_dup(comm, &dup), "MPI_Comm_dup"));
  (void)MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  if (rank != root) {
    lock.Unlock();
    absl::Status s = mpi_internal::Serve(dup, root, /*one_executor=*/true);
    (void)MPI_Comm_free(&dup);
    if (!s.ok()) return s;
    return std::unique_ptr<MpiExecutor>();
  }
  e.comm = dup;
  e.comm_end = CommEnd::kFree;
  e.exit_workers = false;
  for (int r = 0; r < size; ++r) {
    if (r != root) e.workers.push_back(r);
  }
  MPROC_ASSIGN_OR_RETURN(std::unique_ptr<mpi_internal::Engine> engine,
                         mpi_internal::Engine::Start(std::move(e)));
  return std::unique_ptr<MpiExecutor>(new MpiExecutor(std::move(engine), false));
}

MpiExecutor::~MpiExecutor() {
  if (engine_->OnEngineThread()) {
    // From a done callback: the engine cannot wait for itself. It finishes its work and frees
    // itself; a static launch's next executor may be created once it has.
    const bool static_launch = static_launch_;
    mpi_internal::Engine::Orphan(std::move(engine_), [static_launch] {
      if (static_launch) TheLaunch().executor_open.store(false);
    });
    return;
  }
  (void)Shutdown(true);
  engine_.reset();
  if (static_launch_) TheLaunch().executor_open.store(false);
}

absl::Status MpiExecutor::Shutdown(bool wait, bool cancel_futures) {
  if (cancel_futures) engine_->CancelPending();
  engine_->Close();
  if (!wait) return absl::OkStatus();
  MPROC_RETURN_IF_ERROR(engine_->Join());
  if (static_launch_) TheLaunch().executor_open.store(false);
  return absl::OkStatus();
}

}  // namespace mproc
