// ipc/internal/queue_state.h — the Queue's shared segment layout and its per-process state
// (QueueShared), shared by the ring path (queue_rings.h), the socket path (queue_socket.h) and
// the orchestration in ipc/queue.cc. Internal to ipc/.
#ifndef MPROC_IPC_INTERNAL_QUEUE_STATE_H_
#define MPROC_IPC_INTERNAL_QUEUE_STATE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "base/owner.h"
#include "base/process_id.h"
#include "base/unique_fd.h"
#include "ipc/internal/byte_ring.h"
#include "ipc/queue.h"
#include "serialize/frame.h"
#include "shm/segment.h"

namespace mproc {
namespace ipc_internal {

// ---- The shared-memory rings (the path of ordinary items) ------------------------------------
//
// Each of the first kOwnRings producer processes owns one ring: a byte ring in the queue's
// segment that only it writes (under a process-local mutex), so publishing is one release
// store of `tail` and a producer killed while writing has published nothing. Producers beyond
// those (an HPC node's 32 or 64) share the kSharedRings rings that follow, spread evenly,
// each writing under the ring's put lock (an owner word, base/owner.h: a producer killed
// holding it is taken over from, and what it half wrote lies past `tail`, unpublished). They
// keep every guarantee of an owned ring; they pay a lock per Put, and contend for it only with
// the producers of their own ring. (Before, they went to the socket: a system call per item at both
// ends, 9-14x slower per item than 16 producers on rings, and outside the order stamps.) Consumers
// in any process claim the record at `head` by copying it out first and then moving `head` past it
// with a CAS: a consumer killed before the CAS took nothing, one killed after it held exactly that
// item. A losing CAS discards the copy (the producer only reuses bytes behind `head`, so a copy
// that loses the CAS may be torn but is never used). Records are a header and the bytes, padded to
// 8: 8 bytes (length, tag) for an unstamped record, 16 (length, stamped tag, order stamp) for a
// stamped one.
//
// Order across producers (DESIGN.md: Puts ordered by happens-before come out in that order).
// Once a second ring has ever been owned, every record carries an order stamp: a fetch_add on
// one shared counter, taken before the record is published. If Put A happens before Put B,
// A's fetch_add precedes B's in the counter's modification order, so stamp(A) < stamp(B). A
// consumer takes the record with the smallest stamp among the rings' heads, and confirms it:
// it looks again at every ring it found empty, after it saw the candidate published. Any A
// that happens before candidate B was published before B was stamped, so that second look
// finds it (a ring's later records only carry larger stamps, so rings seen non-empty need no
// second look). While one ring is all there has ever been, records carry stamp 0 and no
// counter is touched: a lone producer pays nothing.
constexpr int kOwnRings = kQueueOwnRings;
constexpr int kSharedRings = kQueueSharedRings;
constexpr int kRings = kOwnRings + kSharedRings;
static_assert(kRings <= 32, "`active` has a bit per ring");
constexpr uint64_t kRingBytes = 8 << 20;
// A producer may fill its ring up to this many bytes, except that an empty ring always takes
// one record: the byte budget of an unbounded queue.
constexpr uint64_t kRingBudget = 4 << 20;
constexpr uint64_t kRecordHeader = 8;          // length, tag
constexpr uint64_t kStampedHeader = 16;         // length, stamped tag, order stamp
constexpr uint32_t kStampedTag = 0x4d505253;    // "SRPM"
constexpr uint32_t kRecordTag = 0x4d505251;  // "QRPM"
// Items bigger than this, and items carrying descriptors, travel on the socket.
constexpr uint64_t kRingMaxItem = kRingBytes - 2 * kStampedHeader;

// ---- The socket path (items with descriptors, and items bigger than a ring) ------------------
//
// One SOCK_SEQPACKET pair shared by every handle: each item is one record (the kernel hands a
// whole record to exactly one receiver). The payload starts with the sending producer's ring
// index (or -1), so the receiver can tell that producer its socket item is gone.
constexpr uint8_t kInline = 1;
constexpr uint8_t kInMemfd = 2;
constexpr size_t kSocketInlineMax = 64 << 10;
constexpr size_t kRingTag = sizeof(int32_t);
constexpr size_t kMaxRecord = kFrameHeaderSize + kRingTag + kSocketInlineMax;
constexpr size_t kMaxFds = 253;

// For a shared ring, "the owner" below means each of its producers: they wait for space and
// for their socket items together (and are woken together).
struct alignas(64) RingHeader {
  std::atomic<uint64_t> owner{0};          // the producer (base/owner.h: pid + start time), 0: free
  std::atomic<uint32_t> space_seq{0};      // futex: bumped when head moves and the owner waits
  std::atomic<uint32_t> owner_waiting{0};  // the owner waits for space (or for socket_pending)
  std::atomic<int32_t> socket_pending{0};  // the owner's socket items not yet received
  std::atomic<uint32_t> put_lock{0};       // a shared ring's writers: an owner word (tid)
  std::atomic<uint64_t> wake_head{0};      // a waiting owner wants waking once head reaches it
  alignas(64) std::atomic<uint64_t> head{0};  // consumers' claim position (bytes, monotonic)
  std::atomic<uint64_t> taken{0};             // records claimed (for Qsize)
  alignas(64) std::atomic<uint64_t> tail{0};  // the owner's publish position
  std::atomic<uint64_t> published{0};         // records published (for Qsize)
};

// In the queue's shared segment, followed by kRings rings of kRingBytes.
// Item counts live beside each ring's head and tail (and socket_items), not in one shared
// counter that producer and consumer would bounce between their CPUs on every item.
constexpr uint64_t kQueueMagic = 0x6d70726f632d7175ULL;  // "mproc-qu"
// Bumped whenever the layout below changes: a segment from another build is refused.
constexpr uint32_t kQueueVersion = 4;

struct alignas(64) QueueState {
  uint64_t magic = kQueueMagic;
  uint32_t version = kQueueVersion;
  uint32_t state_bytes = sizeof(QueueState);  // another build's layout shows here too
  std::atomic<int64_t> unfinished{0};  // JoinableQueue: put but not TaskDone'd
  std::atomic<uint32_t> join_seq{0};   // futex: bumped when unfinished reaches 0
  std::atomic<uint32_t> slots_seq{0};  // futex: bumped when a slot frees
  std::atomic<int64_t> used{0};        // maxsize slots taken
  std::atomic<uint32_t> slot_waiters{0};  // producers about to wait on slots_seq
  uint64_t maxsize = 0;
  uint32_t joinable = 0;
  alignas(64) std::atomic<uint32_t> items_seq{0};  // futex: bumped on publish when sleepers
  std::atomic<uint32_t> sleepers{0};               // consumers about to wait on items_seq
  std::atomic<int64_t> socket_items{0};            // records on the socket (approximate)
  std::atomic<uint32_t> doorbell_armed{0};         // someone asked for fileno(): ring it
  // Read by every Put and Get, written when a ring is first owned: a line of its own.
  alignas(64) std::atomic<uint32_t> active{0};     // bit r: ring r was ever owned
  std::atomic<uint32_t> shared_joins{0};           // producers given a shared ring, ever
  // The order stamps' counter (see above); starts at 1, so every stamp beats stamp 0.
  alignas(64) std::atomic<uint64_t> order{1};
  RingHeader rings[kRings];
};

// The layout is shared between processes, so it must not depend on anything but this file:
// lock-free atomics only (a lock inside a std::atomic would be process-private), standard
// layout, nothing to destroy, and the indices producers and consumers write apart.
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free &&
              std::atomic<int64_t>::is_always_lock_free && std::atomic<int32_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<QueueState> && std::is_standard_layout_v<RingHeader>);
static_assert(std::is_trivially_destructible_v<QueueState>);
static_assert(sizeof(RingHeader) == 3 * 64 && alignof(RingHeader) == 64);
static_assert(offsetof(RingHeader, head) == 64 && offsetof(RingHeader, tail) == 128);
static_assert(offsetof(QueueState, items_seq) % 64 == 0 && offsetof(QueueState, rings) % 64 == 0 &&
              offsetof(QueueState, active) % 64 == 0 && offsetof(QueueState, order) % 64 == 0);

constexpr uint64_t kStateBytes = (sizeof(QueueState) + 4095) / 4096 * 4096;
constexpr uint64_t kSegmentBytes = kStateBytes + kRings * kRingBytes;

using Ring = ByteRing<kRingBytes>;

// One per process per queue: the shared channel and state, and this process's producer ring.
struct QueueShared {
  UniqueFd rx;
  UniqueFd tx;
  UniqueFd doorbell;  // eventfd shared by every handle: readable while items (may) wait
  Segment segment;
  Mapping mapping;
  QueueState* state = nullptr;
  std::byte* ring_data = nullptr;  // kRings * kRingBytes
  std::atomic<bool> closed{false};

  Mutex put_mu;  // this process's producers, one at a time
  int ring ABSL_GUARDED_BY(put_mu) = -1;  // the ring this process puts into
  // ...when chosen by this pid (a fork child chooses its own)
  pid_t ring_pid ABSL_GUARDED_BY(put_mu) = 0;
  // Our ring's head as last read: a lower bound.
  uint64_t head_cache ABSL_GUARDED_BY(put_mu) = 0;
  // Each ring's tail as last read by a consumer here: a lower bound, so a consumer reads the
  // producer's cache line only when it has caught up.
  std::atomic<uint64_t> tail_cache[kRings] = {};
  // The largest order stamp a consumer here saw at each ring's head: every record the ring
  // holds or will hold has a larger one (TakeFromRings).
  std::atomic<uint64_t> head_floor[kRings] = {};

  // Socket items this process received (claimed: no other consumer can have them) but could
  // not map: out of address space or of mappings. Kept, and returned first by the next Get in
  // this process, so a transient failure loses nothing. A fork child's copy is not its own.
  struct Stashed {
    Segment segment;
    uint64_t len = 0;
    std::vector<UniqueFd> fds;
  };
  Mutex stash_mu;
  std::deque<Stashed> stash ABSL_GUARDED_BY(stash_mu);
  pid_t stash_pid ABSL_GUARDED_BY(stash_mu) = 0;
  std::atomic<bool> has_stash{false};

  ~QueueShared() {
    MutexLock lock(&put_mu);
    if (ring >= 0 && ring < kOwnRings && ring_pid == CurrentPid()) {
      uint64_t me = CurrentProcessOwner();
      state->rings[ring].owner.compare_exchange_strong(me, 0);
    }
  }
};

inline absl::Status ClosedError() { return absl::FailedPreconditionError("queue is closed"); }

// Waits go in bounded slices (Deadline::Slice), so a Close in another thread of this process
// is noticed.
constexpr absl::Duration kCloseSlice = absl::Milliseconds(50);

// Where a Get copies an item: grows without initialising, keeps its capacity.
struct TakeBuffer {
  std::unique_ptr<std::byte[]> data;
  size_t cap = 0;
  size_t size = 0;
  std::byte* Resize(size_t n) {
    if (n > cap) {
      data.reset(new std::byte[n]);
      cap = n;
    }
    size = n;
    return data.get();
  }
};

}  // namespace ipc_internal
}  // namespace mproc

#endif  // MPROC_IPC_INTERNAL_QUEUE_STATE_H_
