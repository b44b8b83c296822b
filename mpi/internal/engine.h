// mpi/internal/engine.h — the MPI executor's engine: one thread that owns every MPI call of an
// executor on its root, and the serving loop of a worker rank.
//
// Root: Submit (any thread) queues a task under a mutex; the engine thread sends it to a worker
// rank with MPI_Isend (at most tasks_per_rank held by each, run there in order), completes
// sends with MPI_Testsome, and takes results with a matched probe (MPI_Improbe, then
// MPI_Mrecv): the message's size is known before anything is allocated, so a message above
// the limit is refused without reading it into memory. While tasks are out the thread polls
// MPI (spinning, then yielding the CPU between polls: MPI offers no descriptor to sleep on);
// with none out it sleeps on an eventfd that Submit rings only when it sleeps. A thread
// waiting on a Future drives (Engine::Drive): it runs the same turns under the same lock
// (turn_mu: one MPI caller at a time) while the engine thread parks, looking again every
// millisecond; the done callbacks its turns set aside run on the engine thread, and when it
// leaves it hands back what is still out. One waiter drives at a time.
//
// Wire (tags on a communicator of the executor's own, never the user's):
//   kHello   root -> worker   u32 version, u64 session, string object id (base/code_ref.h),
//                             u64 limit, i64 heartbeat interval in ns (0: none), string
//                             initializer (empty, or an InitEntry, the function, its
//                             arguments: pool/internal/task_protocol.h)
//   kReady   worker -> root   u64 session (echoed), bool same program, string object id,
//                             string host, i64 pid, bool beats (it will send kBeat),
//                             string why the initializer failed (empty: it ran, or none)
//   kBeat    worker -> root   (empty) every interval while it runs a task; needs
//                             MPI_THREAD_MULTIPLE on the worker (a second thread sends it)
//   kTask    root -> worker   u64 id, then the task bytes (pool/internal/task_protocol.h)
//   kResult  worker -> root   u64 id, then the task's output
//   kFailed  worker -> root   u64 id, i32 status code, string message (the task as a whole)
//   kBye     root -> worker   the executor is done (a static worker waits for the next one)
//   kExit    root -> worker   the worker leaves its serving loop; (empty), or u8 1 when the
//                             root will not disconnect (it gave up on a rank: a spawned
//                             worker then finalizes without MPI_Comm_disconnect, which
//                             would wait for the root for ever)
//   kWrongVersion worker -> root  u64 session (echoed), u32 its version, string host, i64 pid:
//                             the hello's version is not its own; it serves on (waits for
//                             the next hello)
// Fixed across versions, so that builds of different versions refuse each other cleanly: the
// tags' values, kHello's first two fields (u32 version, u64 session), kWrongVersion, kBye and
// kExit.
// A worker runs its tasks in the order received and answers each, so the answer from rank r
// is for the oldest task r holds. Task ids and sessions are unique in the root's process, so
// what an earlier executor left on a kept communicator (a late handshake reply, the answer to
// a task it gave up on) is recognised and dropped.
#ifndef MPROC_MPI_INTERNAL_ENGINE_H_
#define MPROC_MPI_INTERNAL_ENGINE_H_

#include <mpi.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "pool/internal/task_sink.h"
#include "serialize/buffer.h"

namespace mproc::mpi_internal {

enum Tag : int {
  kHello = 7301,
  kReady,
  kTask,
  kResult,
  kFailed,
  kBye,
  kExit,
  kBeat,
  kWrongVersion,
};

inline constexpr uint32_t kWireVersion = 2;
// kExit's payload when the root will not disconnect.
inline constexpr uint8_t kExitAlone = 1;
// The version a worker speaks: kWireVersion, or (tests of the refusal) the number in the
// environment variable MPROC_MPI_WIRE_VERSION_FOR_TEST.
uint32_t WorkerWireVersion();

// A worker rank as its handshake described it.
struct WorkerInfo {
  int rank = -1;     // in the executor's communicator (the remote group of an intercommunicator)
  std::string host;  // MPI_Get_processor_name
  pid_t pid = 0;
  std::string object;  // its main executable (MainObjectId)
  bool beats = false;  // it sends heartbeats while it runs a task
  std::string init_failure;  // why the initializer failed there ("" when it ran, or none)
};

// What the engine does with its communicator once the workers are released.
enum class CommEnd { kKeep, kFree, kDisconnect };

struct EngineOptions {
  MPI_Comm comm = MPI_COMM_NULL;  // not the user's: a duplicate, or a spawned group
  CommEnd comm_end = CommEnd::kFree;
  std::vector<int> workers;  // their ranks in comm
  int tasks_per_rank = 2;
  uint64_t max_message_bytes = 0;
  absl::Duration handshake_timeout = absl::Seconds(60);
  // A worker that holds tasks and is not heard from (an answer, a heartbeat) for this long is
  // lost: the executor breaks. Infinite: no heartbeats.
  absl::Duration heartbeat_timeout = absl::Seconds(3);
  // A task not answered this long after it reached the front of its worker's queue: its
  // worker is lost. Infinite: no limit.
  absl::Duration task_timeout = absl::InfiniteDuration();
  // The initializer, run by every worker at the handshake: an InitEntry, the function and its
  // arguments, encoded (pool/internal/task_protocol.h's InitTraits); empty for none.
  std::string initializer;
  // Whether the workers leave their loop at the end (kExit; spawned workers) or wait for the
  // next executor (kBye; static workers), or return (kBye; a CreateOnComm group).
  bool exit_workers = false;
};

// INVALID_ARGUMENT for options Start would refuse (checked before any MPI call).
absl::Status CheckOptions(const EngineOptions& o);

// Engines started and not yet finished (their threads may be making MPI calls).
int LiveEngines();
// True once an engine over a kept communicator gave up on answers it was owed: that
// communicator is out of step and no later executor may use it.
bool KeptCommUnusable();
// True once any engine gave up on ranks (lost, or owing answers, or silent in the handshake):
// MPI_Finalize would wait for them, so the process must end the job with MPI_Abort instead.
bool MpiUnrecoverable();

class Engine final : public pool_internal::TaskSink {
 public:
  // Starts the engine thread and runs the handshake with every worker. A worker whose
  // initializer failed leaves the engine broken (every Submit fails ABORTED with the
  // reason), as a process pool's failed initializer does. Errors:
  // FAILED_PRECONDITION (a worker runs another program: its rank, host and program named),
  // DEADLINE_EXCEEDED (a worker did not answer in time), UNAVAILABLE (an MPI call failed).
  static absl::StatusOr<std::unique_ptr<Engine>> Start(EngineOptions options);
  ~Engine() override;  // Close, then Join

  absl::StatusOr<uint64_t> Submit(EncodeBuffer task, pool_internal::TaskDone done,
                                  std::shared_ptr<void> keepalive) override;
  bool Cancel(uint64_t id, pool_internal::CancelledTask* removed) override;
  // A waiter's thread runs the engine's turns until `ready()` or `deadline` (while it does,
  // the engine thread parks): a result then reaches its waiter with no thread hand-off. Done
  // callbacks are handed to the engine thread. Returns at once on the engine thread, inside a
  // turn, or while another waiter drives.
  void Drive(const std::function<bool()>& ready, const Deadline& deadline) override;
  // Cancels every task not yet sent (their callbacks get CANCELLED, on this thread).
  void CancelPending();
  // No more tasks; those queued and out finish, then the workers are released.
  void Close();
  // Waits for the engine thread (after Close), which releases the workers. FAILED_PRECONDITION
  // when called from it.
  absl::Status Join();
  // Whether this is the engine thread (a done callback runs there).
  bool OnEngineThread() const;
  // Drops an engine from its own thread (its owner destroyed from a done callback): it is
  // closed, finishes the tasks queued and out, releases the workers, then the thread frees it
  // and runs `after`. Futures of its tasks stay valid meanwhile. MPI finalization waits for
  // such engines (pool/internal/orphans.h).
  static void Orphan(std::unique_ptr<Engine> engine, std::function<void()> after);
  const std::vector<WorkerInfo>& workers() const;

  struct State;

 private:
  Engine() = default;
  std::unique_ptr<State> st_;
};

// The worker side: serves the executors of `root` on `comm` (task after task, executor after
// executor) until a kBye (when `one_executor`) or a kExit. Errors: UNAVAILABLE when an MPI call
// fails, INTERNAL on a message that breaks the protocol.
// `*root_disconnects` (when given) says, after a kExit, whether the root disconnects from
// this communicator (it does not after it gave up on a rank).
absl::Status Serve(MPI_Comm comm, int root, bool one_executor, bool* root_disconnects = nullptr);

// An MPI return code as a Status: OK for MPI_SUCCESS, else UNAVAILABLE naming `what` and MPI's
// own message.
absl::Status MpiStatus(int rc, const char* what);

}  // namespace mproc::mpi_internal

#endif  // MPROC_MPI_INTERNAL_ENGINE_H_
