// ipc/internal/queue_rings.h — the Queue's shared-memory path: producer rings (owned and
// shared), order stamps, the consumers' take, and the wake-ups between them. The design is
// described at the top of ipc/internal/queue_state.h. Internal to ipc/.
#ifndef MPROC_IPC_INTERNAL_QUEUE_RINGS_H_
#define MPROC_IPC_INTERNAL_QUEUE_RINGS_H_

#include <poll.h>

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "base/deadline.h"
#include "base/futex.h"
#include "ipc/internal/queue_state.h"

namespace mproc {
namespace ipc_internal {

// Whether an item is (probably) waiting in a ring (RingsEmpty) or on the socket.
bool RingsEmpty(const QueueState* st);
bool MayHaveItems(const QueueState* st);
// The doorbell (for Wait() over fileno()): rung when a publish made the queue non-empty,
// drained by a consumer that found it empty (queue_rings.cc).
void RingDoorbell(QueueShared& s);
void DrainDoorbell(QueueShared& s);
// Wakes a consumer waiting for items (see queue_rings.cc for when a producer must).
void WakeConsumer(QueueState* st);
// Wakes the owner (the producers) of a ring waiting for space or for socket items.
void WakeOwner(RingHeader& r, uint64_t head);

inline bool IsShared(int ri) { return ri >= kOwnRings; }
// The ring this process produces into (requires put_mu).
int MyRing(QueueShared& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.put_mu);

// Waits on the owner's space_seq (in slices, minding Close) until `ready()`; OK, or
// RESOURCE_EXHAUSTED (non-blocking), DEADLINE_EXCEEDED, FAILED_PRECONDITION (closed).
// `wake_head`: consumers wake the owner only once the ring's head reaches it (0: at any
// take). ready() may hold before that; slices of 2 ms bound how long the owner then sleeps
// on (consumers that stopped taking short of wake_head), and let it notice a Close.
template <typename Ready>
absl::Status WaitAsOwner(QueueShared& s, RingHeader& r, const Deadline& deadline, bool block,
                         uint64_t wake_head, Ready ready) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.put_mu) {
  for (;;) {
    if (ready()) return absl::OkStatus();
    if (!block) return absl::ResourceExhaustedError("queue's byte budget is full");
    if (deadline.Expired()) {
      return absl::DeadlineExceededError("queue's byte budget is full: Put timed out");
    }
    if (s.closed.load(std::memory_order_relaxed)) return ClosedError();
    // Consumers asleep on items this batch published but has not announced yet would never
    // make the space we wait for.
    WakeConsumer(s.state);
    uint32_t seq = r.space_seq.load(std::memory_order_seq_cst);
    r.wake_head.store(wake_head, std::memory_order_relaxed);
    r.owner_waiting.store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the consumer's CAS
    if (!ready()) FutexWait(&r.space_seq, seq, deadline.Slice(absl::Milliseconds(2)));
    r.owner_waiting.store(0, std::memory_order_relaxed);
  }
}

// Publishes one ordinary item into ring `ri` (requires put_mu): waits for the owner's socket
// items to be received and for space; `*was_empty`: a consumer may sleep on the ring.
absl::Status RingPut(QueueShared& s, int ri, std::span<const std::byte> bytes,
                     const Deadline& deadline, bool block, bool* was_empty)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.put_mu);
// Takes the put lock of shared ring `r` (a dead holder is taken over from).
absl::Status LockSharedRing(RingHeader& r, const Deadline& deadline);

enum class Take { kNone, kTaken, kCorrupt };
// Claims one item from any ring into `out` (the oldest by order stamp); kCorrupt names the
// ring in `*bad`.
Take TakeFromRings(QueueShared& s, TakeBuffer* out, int* bad);
absl::Status CorruptRing(int ri);

// Claims a run of up to `max` unstamped records from the head of the one active ring with a
// single head update (GetMany): their payloads are appended to `bytes`, each at a 16-byte
// aligned offset, and (offset, length) to `items`. Returns how many: 0 when more than one
// ring is active, its head record is stamped, or another consumer moved the head first (take
// one at a time then); -2 when the one active ring is empty; -1 when its bytes are not
// records (`*bad` names it). Unstamped records have no item in another ring ordered before
// them, so a run keeps the Get order.
int TakeRunFromRing(QueueShared& s, size_t max, std::vector<std::byte>* bytes,
                    std::vector<std::pair<uint32_t, uint32_t>>* items, int* bad);

}  // namespace ipc_internal
}  // namespace mproc

#endif  // MPROC_IPC_INTERNAL_QUEUE_RINGS_H_
