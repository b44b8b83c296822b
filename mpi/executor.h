// mpi/executor.h — MpiExecutor: ProcessPoolExecutor's API (pool/executor.h) over MPI ranks, for
// work that outgrows one machine. The same Future (pool/future.h), the same tasks: a function
// pointer or captureless lambda sent as a code reference, its arguments and result by their
// codecs.
//
// Three ways to launch, as mpi4py.futures has:
//
// (a) Static, the primary one: `mpirun -n N ./app`. Every rank calls MpiInit first thing in
//     main; ranks 1..N-1 become workers inside it and never run the rest of main (as
//     `python -m mpi4py.futures` workers never run the script); rank 0 goes on and creates
//     executors over them, one after another:
//
//       int main(int argc, char** argv) {
//         mproc::Init(argc, argv);
//         if (absl::Status s = mproc::MpiInit(&argc, &argv); !s.ok()) return 1;
//         auto ex = mproc::MpiExecutor::Create();           // rank 0 only gets here
//         mproc::Future<int> f = (*ex)->Submit(Square, 7);
//         ...
//       }
//
// (b) Over a communicator of a code that is already SPMD: CreateOnComm(comm, root) is
//     collective; the root gets the executor, the others serve its tasks and get nullptr once
//     it shuts down (mpi4py's MPICommExecutor).
// (c) From a singleton (`./app`, no mpirun): Create({.spawn_workers = n}) starts n copies of
//     this executable with MPI_Comm_spawn; MpiInit in each recognises it and serves.
//
// Semantics are ProcessPoolExecutor's (Submit, Map with chunksize/timeout/buffersize,
// Shutdown(wait, cancel_futures), Future's Result/Exception/Cancel/AddDoneCallback, WaitFutures,
// AsCompleted), with these differences: arguments and results may not carry file descriptors
// (a SharedBytes, a Queue...: INVALID_ARGUMENT, or a compile error where the type says so);
// every message is at most max_message_bytes (RESOURCE_EXHAUSTED, checked before anything is
// sent or allocated); there is no TerminateWorkers (ranks belong to the MPI job).
//
// Rank death: under Open MPI's defaults, a rank that dies aborts the whole job (mpirun kills
// every rank, this one included), so no Future can report it. Under `mpirun
// --enable-recovery` the job goes on, and the executor follows ProcessPoolExecutor's
// BrokenProcessPool rule: a worker that holds tasks and falls silent for heartbeat_timeout
// (or runs one past task_timeout) is lost, every unfinished Future fails with ABORTED
// "BrokenExecutor: rank R (host H, pid P) ...", and later Submits fail the same. The ranks
// are then out of step: no later executor may use a static launch's workers, and this process
// ends the job with MPI_Abort when MPI is finalized, by the program or at exit (a dead rank
// cannot take part in MPI_Finalize). Open MPI 4
// has no ULFM; with Open MPI 5's ULFM, MPI_ERR_PROC_FAILED from a call breaks the executor
// the same way (an MPI error always does).
//
// Each rank must run the same executable: the handshake compares each worker's build id with
// the root's and Create fails with FAILED_PRECONDITION naming the rank, host and both ids.
//
// Threads: MpiInit asks for MPI_THREAD_MULTIPLE; the executor needs at least
// MPI_THREAD_SERIALIZED. While an executor lives it makes MPI calls, one at a time: on its
// engine thread, and on one thread waiting in a Future's Result or Exception, which runs the
// engine's turns itself while the engine thread parks (a result then reaches its waiter with
// no hand-off between threads; done callbacks still run on the engine thread, never on a
// waiter).
// Other threads may call MPI meanwhile only under MPI_THREAD_MULTIPLE, and under SERIALIZED
// Create and CreateOnComm refuse a second executor (FAILED_PRECONDITION). A task submitted
// while a waiter has just stopped driving, and that nobody then waits for, is sent within a
// millisecond (the parked engine thread's look). One executor at a time over a launch's (a)
// workers. CreateOnComm is collective: calls on one communicator must be made in the same
// order on every rank, as for any MPI collective. Every method of an executor may be called
// from any thread.
#ifndef MPROC_MPI_EXECUTOR_H_
#define MPROC_MPI_EXECUTOR_H_

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mpi/internal/engine.h"
#include "pool/future.h"
#include "serialize/frame.h"

namespace mproc {

struct MpiExecutorOptions {
  // Tasks sent ahead to each worker rank, so that it never idles on a round trip: at least 1.
  int tasks_per_rank = 2;
  // The largest task or result message, in bytes (at most INT_MAX - 64: MPI counts in int).
  // A larger task is refused at Submit; a larger result fails its Future; either is
  // RESOURCE_EXHAUSTED, and neither is ever allocated on the receiving side.
  uint64_t max_message_bytes = kDefaultMaxFramePayload;
  // How long Create waits for every worker to answer the handshake.
  absl::Duration handshake_timeout = absl::Seconds(60);
  // Rank death, where the job survives it (mpirun --enable-recovery): a worker that holds
  // tasks and sends nothing (no answer, no heartbeat) for this long is lost and the executor
  // breaks. Workers send a heartbeat every sixth of it while they run a task, from a second
  // thread (so only under MPI_THREAD_MULTIPLE, which MpiInit asks for). Infinite: none.
  absl::Duration heartbeat_timeout = absl::Seconds(3);
  // A task not answered this long after its worker started it: the worker is lost, as
  // above (for workers without heartbeats, or tasks that must not hang). Infinite: no limit.
  absl::Duration task_timeout = absl::InfiniteDuration();
  // Launch (c): in a singleton, start this many workers (MPI_Comm_spawn of this executable).
  int spawn_workers = 0;
};

// mproc::MpiInit(&argc, &argv)
//
// Initializes MPI (MPI_Init_thread, asking for MPI_THREAD_MULTIPLE) unless the program already
// did, and finalizes it at exit. In a launch of several ranks, every rank but 0 serves rank 0's
// executors here until rank 0 exits, then finalizes MPI and exits with status 0: it never
// returns. So does a worker started by Create({.spawn_workers}) (recognised by the argument
// --mproc-mpi-worker, which MpiInit takes out of argv). Returns OK on rank 0 and in a
// singleton. Errors: UNAVAILABLE (MPI could not be initialized), FAILED_PRECONDITION (MPI
// gives less than MPI_THREAD_SERIALIZED). Call it once, from main's thread, before any thread
// of yours makes MPI calls.
absl::Status MpiInit(int* argc, char*** argv);

// One worker rank, as its handshake described it.
using MpiWorker = mpi_internal::WorkerInfo;

class MpiExecutor {
 public:
  using Options = MpiExecutorOptions;

  // MpiExecutor::Create(options)
  //
  // On rank 0 of a launch of several ranks (after MpiInit): an executor over ranks 1..N-1. In a
  // singleton with options.spawn_workers > 0: an executor over that many new processes. Errors:
  // FAILED_PRECONDITION (MpiInit not called; not rank 0; another executor of this launch still
  // open; a worker runs another program; a singleton without spawn_workers, or
  // spawn_workers in a launch of several ranks), INVALID_ARGUMENT (bad options),
  // DEADLINE_EXCEEDED (a worker did not answer the handshake), UNAVAILABLE (an MPI call failed,
  // such as the spawn).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MpiExecutor>> Create(Options options = {}) {
    return CreateWith(std::move(options), std::string());
  }
  // With an initializer (CPython's initializer and initargs): a function pointer (or
  // captureless lambda) and its arguments, run in each worker at the start of this executor
  // (a static launch's workers serve executor after executor: it runs again for each). One
  // that throws breaks the executor, as in ProcessPoolExecutor: every Future fails ABORTED
  // "MpiExecutor initializer failed on rank R (host H): <type>: <what>". Other errors as
  // Create(options).
  template <typename F, typename... A>
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MpiExecutor>> Create(Options options,
                                                                           F initializer,
                                                                           A&&... args) {
    return CreateWith(std::move(options), EncodeInitializer(initializer, std::forward<A>(args)...));
  }

  // MpiExecutor::CreateOnComm(comm, root, options)
  //
  // Collective over `comm` (MPI initialized by the caller, or by MpiInit in a singleton): on
  // `root`, an executor over the other ranks of comm; on every other rank, serves its tasks
  // until that executor shuts down and then returns nullptr. Errors as Create, on the root; a
  // worker rank returns UNAVAILABLE or INTERNAL when MPI or the protocol fails.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MpiExecutor>> CreateOnComm(
      MPI_Comm comm, int root, Options options = {}) {
    return CreateOnCommWith(comm, root, std::move(options), std::string());
  }
  // With an initializer, as Create's (every rank passes the same one; the root's is the one
  // that runs).
  template <typename F, typename... A>
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MpiExecutor>> CreateOnComm(
      MPI_Comm comm, int root, Options options, F initializer, A&&... args) {
    return CreateOnCommWith(comm, root, std::move(options),
                            EncodeInitializer(initializer, std::forward<A>(args)...));
  }

  // Shutdown(wait=true). From one of its own done callbacks (on the engine thread), which
  // cannot wait for itself: the executor stops accepting work, finishes what was submitted once
  // the callback returns, releases the workers and frees itself; its futures complete as
  // usual. MPI finalization (MPI_Finalize, or the exit after MpiInit) waits for it first.
  ~MpiExecutor();

  // As ProcessPoolExecutor::Submit. The Future fails INVALID_ARGUMENT when the arguments carry
  // descriptors at run time, RESOURCE_EXHAUSTED when the task is above max_message_bytes,
  // FAILED_PRECONDITION after Shutdown, ABORTED "BrokenExecutor: ..." once an MPI call failed.
  template <typename F, typename... A>
  Future<pool_internal::TaskResult<F>> Submit(F fn, A&&... args) {
    static_assert(!kTypeCarriesFds<typename pool_internal::TaskTraits<F>::Params> &&
                      !kTypeCarriesFds<pool_internal::TaskResult<F>>,
                  "MpiExecutor tasks cannot take or return file descriptors: they cross ranks");
    return pool_internal::SubmitFuture(*engine_, fn, std::forward<A>(args)...);
  }

  // As ProcessPoolExecutor::Map.
  template <typename F, typename T>
  [[nodiscard]] absl::StatusOr<std::vector<absl::StatusOr<pool_internal::TaskResult<F>>>> Map(
      F fn, const std::vector<T>& items, size_t chunksize = 1) {
    ExecutorMapOptions o;
    o.chunksize = chunksize;
    return Map(fn, items, o);
  }
  template <typename F, typename T>
  [[nodiscard]] absl::StatusOr<std::vector<absl::StatusOr<pool_internal::TaskResult<F>>>> Map(
      F fn, const std::vector<T>& items, const ExecutorMapOptions& o) {
    static_assert(!kTypeCarriesFds<typename pool_internal::TaskTraits<F>::Params> &&
                      !kTypeCarriesFds<pool_internal::TaskResult<F>>,
                  "MpiExecutor tasks cannot take or return file descriptors: they cross ranks");
    return pool_internal::MapFutures(*engine_, fn, items, o);
  }

  // MpiExecutor::Shutdown(wait, cancel_futures)
  //
  // As ProcessPoolExecutor::Shutdown: stops accepting work; cancel_futures cancels what no
  // worker has received; with wait, blocks until the rest is done and the workers are released
  // (static workers wait for the next executor; spawned ones exit; CreateOnComm's return).
  // FAILED_PRECONDITION with wait from a done callback (which runs on the engine thread).
  absl::Status Shutdown(bool wait = true, bool cancel_futures = false);

  int max_workers() const { return static_cast<int>(engine_->workers().size()); }
  // The workers, as their handshakes described them (rank, host, pid, program).
  const std::vector<MpiWorker>& Workers() const { return engine_->workers(); }

 private:
  template <typename F, typename... A>
  static std::string EncodeInitializer(F initializer, A&&... args) {
    static_assert(spawn_internal::FunctionPointerLike<F>,
                  "an MpiExecutor initializer is a function pointer or captureless lambda (it "
                  "runs on another rank, found by code reference)");
    auto fn = +initializer;
    using Traits = pool_internal::InitTraits<decltype(fn)>;
    static_assert(!kTypeCarriesFds<typename Traits::Params>,
                  "MpiExecutor initializer arguments cannot carry file descriptors");
    EncodeBuffer b;
    Encode(Traits::kEntry, b);
    Encode(fn, b);
    Encode(typename Traits::Params(std::forward<A>(args)...), b);
    return std::string(b.view());
  }
  static absl::StatusOr<std::unique_ptr<MpiExecutor>> CreateWith(Options options,
                                                                 std::string initializer);
  static absl::StatusOr<std::unique_ptr<MpiExecutor>> CreateOnCommWith(MPI_Comm comm, int root,
                                                                       Options options,
                                                                       std::string initializer);
  explicit MpiExecutor(std::unique_ptr<mpi_internal::Engine> engine, bool static_launch)
      : engine_(std::move(engine)), static_launch_(static_launch) {}
  std::unique_ptr<mpi_internal::Engine> engine_;
  bool static_launch_ = false;
};

}  // namespace mproc

#endif  // MPROC_MPI_EXECUTOR_H_
