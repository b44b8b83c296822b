// ipc/queue.h — Queue<T>, SimpleQueue<T>, JoinableQueue<T>: CPython's multiprocessing queues,
// without the feeder thread.
//
//   MPROC_ASSIGN_OR_RETURN(Queue<Job> q, Queue<Job>::Create(/*maxsize=*/100));
//   MPROC_RETURN_IF_ERROR(q.Put(job));                        // in any process holding q
//   MPROC_ASSIGN_OR_RETURN(Job j, q.Get(absl::Seconds(1)));   // in any other
//
// Two paths, one queue (shared by every handle in every process; passed to children as a
// handle: Codec<Queue<T>>):
//   * Ordinary items go through shared memory: each of the first 16 producer processes owns a
//     byte ring in the queue's memfd segment (rings of 8 MiB, pages allocated as first
//     written), and producers beyond the 16th share 4 more rings, spread evenly, each ring
//     written under a put lock (an owner word: a producer killed holding it is taken over
//     from). Put copies the encoded item in and publishes it with one release store; Get
//     copies the record at a ring's head out and claims it with a CAS. No system call per
//     item: a futex wake only when a consumer sleeps, once per Put (or per 32 items of a
//     PutMany). So 64 producers keep most of 16's throughput (bench: mproc.queue.producers.N).
//   * Items carrying descriptors and items over 8 MiB (they travel in a sealed memfd) go on
//     one SOCK_SEQPACKET socket pair, one record per item; a run of them in PutMany is one
//     sendmmsg or io_uring submission (base/io_ring.h).
// What holds on both paths:
//   * Dequeue is atomic per item: a consumer copies first and claims after (ring), or the kernel
//     hands a whole record to one receiver (socket). A consumer SIGKILLed in Get loses at most
//     the item it had claimed; the queue never desynchronises for the others. A big item this
//     process received but could not map (out of address space) fails that Get with
//     RESOURCE_EXHAUSTED and is kept: the next Get in this process returns it first.
//   * Put is durable: it returns once the item sits in the shared segment or the socket, both
//     of which outlive the producer. A producer SIGKILLed mid-Put has published nothing or the
//     whole item. Encoding happens in the caller, so an unencodable item fails at Put, and there
//     is no feeder thread: a producer exits at once even if nobody reads.
//   * FIFO per producer across both paths (a socket item waits for the producer's ring to
//     drain, and a ring item for the producer's socket items to be received); nothing lost,
//     nothing duplicated.
//   * Order across producers, as CPython's single pipe gives: Puts ordered by happens-before
//     come out in that order (the parent puts, then starts a child that puts: the parent's
//     items first). Ring items carry an order stamp from one shared counter once a second
//     producer has ever used the queue, and a Get takes the oldest ring head, confirmed after
//     it saw it (queue.cc). A lone producer pays nothing; with several, each Put pays one
//     shared fetch_add and each Get looks at the other rings' heads when they may hold
//     something older. Limit: socket items (with descriptors, or over 8 MiB) keep FIFO per
//     producer, but across producers come in the order the socket received them, not by
//     happens-before against ring items.
//   * The byte budget of an unbounded queue is 4 MiB per producer ring (an empty ring always
//     takes one item up to 8 MiB; the producers of a shared ring share its budget) and the
//     socket's buffer for socket items: past it Put blocks
//     (or times out, or PutNowait says RESOURCE_EXHAUSTED "byte budget"). maxsize > 0 bounds
//     the item count exactly.
// An owned ring belongs to its producer process (pid and start time, base/owner.h); a producer
// that exits releases it, and a dead one's ring (its items still queued) is taken over by the
// next producer that finds no free ring, before it would join a shared ring. A producer killed
// and not yet reaped (a zombie) is dead.
//
// Errors (DESIGN.md table): PutNowait on a full queue RESOURCE_EXHAUSTED, GetNowait on an
// empty one UNAVAILABLE; a blocking Put/Get whose timeout passes DEADLINE_EXCEEDED; after
// Close() (this process's handles), Put/Get are FAILED_PRECONDITION — and Close from another
// thread wakes a blocked Get or Put with FAILED_PRECONDITION. TaskDone more often than items
// were put is FAILED_PRECONDITION.
//
// Qsize() is approximate (counters beside each ring and the socket; a consumer killed between
// claiming and counting leaves it one too high, a producer killed in a shared ring's Put
// between counting and publishing too), as CPython documents its own. A consumer
// killed between taking an item and releasing its maxsize slot leaks that slot (capacity drops
// by one); unbounded queues have no slots. A consumer killed while asleep leaves the sleeper
// count high, which only costs producers a futex wake per Put.
//
// Thread-safety: all calls are thread-safe; handles are cheap to copy and share the queue.
// Producer threads of one process take turns on its ring (a mutex). Fork children: a copied
// handle keeps working in the child, which claims a ring of its own (fork while another thread
// is inside Put, and the child's first Put may block on that mutex, as with any lock).

#ifndef MPROC_IPC_QUEUE_H_
#define MPROC_IPC_QUEUE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/spin.h"
#include "base/deadline.h"
#include "base/thread_scratch.h"
#include "base/unique_fd.h"
#include "serialize/buffer.h"
#include "serialize/codec.h"

namespace mproc {
namespace ipc_internal {

struct QueueShared;
template <typename Q>
struct QueueHandleCodec;
struct QueuePutScratch;  // ThreadScratch tags
struct QueuePutManyScratch;
// Item types that decode as views of the received bytes (serialize/codec.h).
template <typename T>
inline constexpr bool kIsView = false;
template <>
inline constexpr bool kIsView<std::string_view> = true;
template <typename U>
inline constexpr bool kIsView<std::span<const U>> = true;

// GetMany's claimed run of ring items: payloads, and (offset, length) of each.
struct GetManyRun {
  std::vector<std::byte> bytes;
  std::vector<std::pair<uint32_t, uint32_t>> items;
};
struct QueueTesting;

// Producer rings (queue.cc): one each for the first kQueueOwnRings producer processes, then
// kQueueSharedRings rings shared by the producers beyond them.
inline constexpr int kQueueOwnRings = 16;
inline constexpr int kQueueSharedRings = 4;

// The type-independent queue: records of encoded bytes and descriptors.
class QueueCore {
 public:
  [[nodiscard]] static absl::StatusOr<QueueCore> Create(size_t maxsize, bool joinable);
  QueueCore() = default;

  absl::Status Put(const EncodeBuffer& item, const Deadline& deadline, bool block);
  // Puts items in order (see Queue::PutMany); `*put` counts those put, also on error.
  absl::Status PutMany(std::span<const EncodeBuffer> items, const Deadline& deadline, bool block,
                       size_t* put);
  // Receives one item: its bytes (`*item`, in this thread's buffer, valid until this thread's
  // next Get) and descriptors.
  absl::Status Get(const Deadline& deadline, bool block, std::span<const std::byte>* item,
                   std::vector<UniqueFd>* fds);
  // After a GetMany's first item: claims a run of ring items with one head update (see
  // TakeRunFromRing), appending them to `bytes` and (offset, length) to `items`. 0 means
  // "take one at a time" (a stashed item, several rings, a stamped head, an empty ring, a
  // race); `*empty` then says the queue looked empty (no need to look again now). Errors:
  // FAILED_PRECONDITION (closed), INVALID_ARGUMENT (corrupt ring).
  absl::StatusOr<size_t> TakeRun(size_t max, std::vector<std::byte>* bytes,
                                 std::vector<std::pair<uint32_t, uint32_t>>* items, bool* empty);

  size_t Qsize() const;
  bool Empty() const;
  int fileno() const;
  bool Full() const;
  size_t maxsize() const;
  void Close();
  bool closed() const;
  absl::Status TaskDone();
  absl::Status Join(const Deadline& deadline);

  // Codec support.
  void EncodeHandle(EncodeBuffer& b) const;
  bool DecodeHandle(DecodeReader& r);

 private:
  friend struct QueueTesting;
  std::shared_ptr<QueueShared> s_;
};

// Tests reach the rings through this (queue_test, faults_test).
struct QueueTesting {
  // The ring this process puts into: -1 before its first Put, then an owned ring
  // (< kQueueOwnRings) or a shared one.
  static int ProducerRing(const QueueCore& q);
  // From now on this process puts into shared ring `k` (0 <= k < kQueueSharedRings).
  static absl::Status UseSharedRing(QueueCore& q, int k);
  // Takes the put lock of this process's shared ring and keeps it: a holder for a test to kill.
  static absl::Status HoldSharedRingLock(QueueCore& q);
  template <typename Q>
  static QueueCore& Core(Q& q) {
    return q.core_;
  }
};

}  // namespace ipc_internal

template <typename T>
class Queue {
 public:
  // Queue::Create(maxsize)
  //
  // A new queue: maxsize > 0 bounds the number of items, 0 leaves it unbounded (up to the
  // byte budget above). Errors: RESOURCE_EXHAUSTED when its memfd, socket pair or mapping
  // cannot be had (descriptors, memory), with the call that failed.
  [[nodiscard]] static absl::StatusOr<Queue> Create(size_t maxsize = 0) {
    absl::StatusOr<ipc_internal::QueueCore> c = ipc_internal::QueueCore::Create(maxsize, false);
    if (!c.ok()) return c.status();
    return Queue(*std::move(c));
  }
  Queue() = default;

  // Queue::Put(item, timeout)
  //
  // Encodes `item` in the calling thread and puts it; returns once it is durable (in the
  // shared segment or the socket), so a Get in any process can take it even if this process
  // dies next. Blocks while the queue is full (maxsize) or this producer's byte budget is
  // spent, up to `timeout`. Errors: DEADLINE_EXCEEDED (still full at the timeout; nothing was
  // put), FAILED_PRECONDITION (this process closed the queue, before or while blocked),
  // INVALID_ARGUMENT (a descriptor in `item` is not open), RESOURCE_EXHAUSTED (an item over
  // 8 MiB whose memfd could not be made). Thread-safe and process-safe: any number of threads
  // and processes may Put at once; each producer's items come out in its order.
  [[nodiscard]] absl::Status Put(const T& item,
                                 absl::Duration timeout = absl::InfiniteDuration()) {
    return PutImpl(item, Deadline::After(timeout), true);
  }
  // Queue::PutNowait(item)
  //
  // Put without blocking: RESOURCE_EXHAUSTED ("full", or "byte budget") instead of waiting;
  // otherwise as Put.
  [[nodiscard]] absl::Status PutNowait(const T& item) {
    return PutImpl(item, Deadline::After(absl::ZeroDuration()), false);
  }
  // Puts every item, in order, as separate items (each Get takes one): one lock and one
  // consumer wake per 32 ring items, one system call per 32 socket items (sendmmsg, or one
  // io_uring submission). Each item is durable as Put's; on an error or timeout the first
  // `*put` items were put and the rest were not.
  [[nodiscard]] absl::Status PutMany(std::span<const T> items,
                                     absl::Duration timeout = absl::InfiniteDuration(),
                                     size_t* put = nullptr) {
    // This thread's encode buffers, reused from one call to the next (as Put's one buffer).
    std::vector<EncodeBuffer>& bufs =
        ThreadScratch<std::vector<EncodeBuffer>, ipc_internal::QueuePutManyScratch>();
    if (bufs.size() < items.size()) bufs.resize(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      bufs[i].Clear();
      Encode(items[i], bufs[i]);
    }
    size_t n = 0;
    absl::Status st = core_.PutMany(std::span<const EncodeBuffer>(bufs.data(), items.size()),
                                    Deadline::After(timeout), true, put ? put : &n);
    // Keep no big buffer, and no more than a few thousand small ones.
    if (bufs.size() > 4096) bufs = std::vector<EncodeBuffer>();
    for (size_t i = 0; i < std::min(bufs.size(), items.size()); ++i) {
      if (bufs[i].capacity() > (64 << 10)) bufs[i] = EncodeBuffer();
    }
    return st;
  }
  // Queue::Get(timeout)
  //
  // Takes one item and decodes it: the oldest of the items whose Puts are ordered before it
  // (see above), each item to exactly one Get in any process. Blocks until one is there, up
  // to `timeout`; a consumer about to sleep spins first (base/spin.h). Errors:
  // DEADLINE_EXCEEDED (none came; nothing was taken), FAILED_PRECONDITION (this process closed
  // the queue, before or while blocked), INVALID_ARGUMENT (the item does not decode as T, or a
  // producer ring's memory was overwritten; the queue goes on for the other rings),
  // RESOURCE_EXHAUSTED (a big item could not be mapped: it is kept for the next Get here).
  // Thread-safe and process-safe.
  [[nodiscard]] absl::StatusOr<T> Get(absl::Duration timeout = absl::InfiniteDuration()) {
    return GetImpl(Deadline::After(timeout), true);
  }
  // Queue::GetNowait()
  //
  // Get without blocking: UNAVAILABLE when no item is there; otherwise as Get.
  [[nodiscard]] absl::StatusOr<T> GetNowait() {
    return GetImpl(Deadline::After(absl::ZeroDuration()), false);
  }
  // Queue::GetMany(out, max, timeout)
  //
  // Takes up to `max` items, appending them to `out` in the order successive Gets would: blocks
  // (as Get, up to `timeout`) for the first, then takes only items already there. Each item
  // goes to exactly one consumer, as with Get. Errors: as Get's for the first item (nothing
  // appended); after the first, a ring whose memory was overwritten ends the call with
  // INVALID_ARGUMENT, the items taken before it staying in `out`, and items that do not decode
  // are dropped, as Get drops one, the call returning the first such INVALID_ARGUMENT after
  // appending the others it took. `max` 0 takes nothing and returns OK at once. T must own its
  // data (not a string_view or span: the bytes they would view are reused). Not re-entrant:
  // a T whose decoding calls GetMany in the same thread is not supported. Thread-safe and
  // process-safe. After the first item, a run of items from one producer's ring is claimed
  // with one update of its head rather than one per item (mproc.queue.1p1c_getmany in the
  // report). A consumer killed inside GetMany loses
  // the items it had claimed and not yet returned (up to `max`), as a killed Get loses its one.
  // Figures (pinned rows, alternated runs): same CPU 1.24-1.37x faster per item than Get;
  // across CPUs about the same (0.85-1.3x either way, noisy).
  [[nodiscard]] absl::Status GetMany(std::vector<T>& out, size_t max,
                                     absl::Duration timeout = absl::InfiniteDuration()) {
    static_assert(!ipc_internal::kIsView<T>,
                  "GetMany needs an item type that owns its data (not a string_view or span)");
    const Deadline d = Deadline::After(timeout);
    std::span<const std::byte> bytes;
    std::vector<UniqueFd> fds;
    auto& run = ThreadScratch<ipc_internal::GetManyRun, ipc_internal::GetManyRun>();
    bool paused = false;
    for (size_t i = 0; i < max;) {
      if (i > 0 && !kTypeCarriesFds<T>) {
        run.bytes.clear();
        run.items.clear();
        bool empty = false;
        absl::StatusOr<size_t> k = core_.TakeRun(max - i, &run.bytes, &run.items, &empty);
        if (!k.ok()) return k.status();
        if (empty) {
          // Caught up with the producers: let a few items gather once (PauseToGather), then
          // return what we have. (Not through Get: a Get that finds nothing resets its
          // streaming state.)
          if (paused) return absl::OkStatus();
          paused = true;
          PauseToGather();
          continue;
        }
        if (*k > 0) {
          absl::Status first_error;
          for (auto [off, len] : run.items) {
            absl::StatusOr<T> v =
                Decode<T>(std::span<const std::byte>(run.bytes.data() + off, len), {});
            if (v.ok()) {
              out.push_back(*std::move(v));
            } else if (first_error.ok()) {
              first_error = v.status();
            }
          }
          if (run.bytes.capacity() > (1 << 20)) run = ipc_internal::GetManyRun();
          if (!first_error.ok()) return first_error;
          i += *k;
          continue;
        }
      }
      absl::Status s = core_.Get(d, /*block=*/i == 0, &bytes, &fds);
      if (!s.ok()) return i > 0 && absl::IsUnavailable(s) ? absl::OkStatus() : s;
      absl::StatusOr<T> v = Decode<T>(bytes, std::move(fds));
      if (!v.ok()) return v.status();
      out.push_back(*std::move(v));
      fds.clear();
      ++i;
    }
    return absl::OkStatus();
  }
  // Get into `out`, reusing its storage (a string or vector keeps its capacity): for large
  // items, no allocation per Get. On an error `out` is unspecified.
  [[nodiscard]] absl::Status GetInto(T& out, absl::Duration timeout = absl::InfiniteDuration()) {
    std::span<const std::byte> bytes;
    std::vector<UniqueFd> fds;
    absl::Status s = core_.Get(Deadline::After(timeout), true, &bytes, &fds);
    if (!s.ok()) return s;
    return DecodeInto(bytes, out, std::move(fds));
  }

  // A descriptor for Wait() (ipc/wait.h) and poll: readable while the queue has items (an
  // eventfd doorbell shared by every handle; rung by producers once anyone asked for it). As
  // with CPython's Queue._reader, another consumer may take the item first: readable means
  // "try GetNowait", which may still say UNAVAILABLE. Owned by the queue; -1 for an empty
  // handle.
  int fileno() const { return core_.fileno(); }
  // Queue::Qsize(), Queue::Empty(), Queue::Full()
  //
  // The number of items in the queue, whether it has none, and whether a bounded one is at
  // maxsize: snapshots, stale as soon as they return when other processes put and get (as
  // CPython's; unlike macOS's, Qsize never raises). 0, true and false on an empty handle.
  // Never block (a few relaxed loads); thread- and process-safe.
  size_t Qsize() const { return core_.Qsize(); }
  bool Empty() const { return core_.Empty(); }
  bool Full() const { return core_.Full(); }
  // Queue::maxsize()
  //
  // The bound given to Create (0: unbounded). Never blocks.
  size_t maxsize() const { return core_.maxsize(); }
  // Queue::Close(), Queue::closed()
  //
  // This process stops using the queue: its Puts and Gets fail with FAILED_PRECONDITION from
  // now on, and a Get or Put blocked in another thread of this process wakes with it. Other
  // processes' handles are untouched, and items already put stay for them. Never blocks;
  // thread-safe.
  void Close() { core_.Close(); }
  bool closed() const { return core_.closed(); }

 protected:
  explicit Queue(ipc_internal::QueueCore core) : core_(std::move(core)) {}
  absl::Status PutImpl(const T& item, const Deadline& d, bool block) {
    // One encode buffer per thread, reused (a big item's buffer is not kept).
    EncodeBuffer& buf = ThreadScratch<EncodeBuffer, ipc_internal::QueuePutScratch>();
    buf.Clear();
    Encode(item, buf);
    absl::Status s = core_.Put(buf, d, block);
    if (buf.capacity() > (64 << 10)) buf = EncodeBuffer();
    return s;
  }
  [[nodiscard]] absl::StatusOr<T> GetImpl(const Deadline& d, bool block) {
    std::span<const std::byte> bytes;
    std::vector<UniqueFd> fds;
    absl::Status s = core_.Get(d, block, &bytes, &fds);
    if (!s.ok()) return s;
    return Decode<T>(bytes, std::move(fds));
  }

  template <typename Q>
  friend struct ipc_internal::QueueHandleCodec;
  friend struct ipc_internal::QueueTesting;
  ipc_internal::QueueCore core_;
};

// CPython's SimpleQueue: unbounded Put/Get/Empty/Close (the same channel, no slots).
template <typename T>
class SimpleQueue : public Queue<T> {
 public:
  // SimpleQueue::Create()
  //
  // A new unbounded queue. Errors: as Queue::Create.
  [[nodiscard]] static absl::StatusOr<SimpleQueue> Create() {
    absl::StatusOr<ipc_internal::QueueCore> c = ipc_internal::QueueCore::Create(0, false);
    if (!c.ok()) return c.status();
    return SimpleQueue(*std::move(c));
  }
  SimpleQueue() = default;

 private:
  explicit SimpleQueue(ipc_internal::QueueCore core) : Queue<T>(std::move(core)) {}
};

// Queue plus TaskDone/Join: Join returns once TaskDone was called for every item put.
template <typename T>
class JoinableQueue : public Queue<T> {
 public:
  // JoinableQueue::Create(maxsize)
  //
  // A new queue counting unfinished items (put, not yet TaskDone), bounded as Queue::Create.
  // Errors: as Queue::Create.
  [[nodiscard]] static absl::StatusOr<JoinableQueue> Create(size_t maxsize = 0) {
    absl::StatusOr<ipc_internal::QueueCore> c = ipc_internal::QueueCore::Create(maxsize, true);
    if (!c.ok()) return c.status();
    return JoinableQueue(*std::move(c));
  }
  JoinableQueue() = default;

  // JoinableQueue::TaskDone(): one item put earlier is done. FAILED_PRECONDITION when called
  // more often than items were put. Process-safe.
  [[nodiscard]] absl::Status TaskDone() { return this->core_.TaskDone(); }
  // JoinableQueue::Join(timeout): OK once TaskDone was called for every item put (at once when
  // none is pending); DEADLINE_EXCEEDED when the timeout passes first. Process-safe.
  [[nodiscard]] absl::Status Join(absl::Duration timeout = absl::InfiniteDuration()) {
    return this->core_.Join(Deadline::After(timeout));
  }

 private:
  explicit JoinableQueue(ipc_internal::QueueCore core) : Queue<T>(std::move(core)) {}
};

namespace ipc_internal {
template <typename Q>
struct QueueHandleCodec {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 4;
  static void Encode(EncodeBuffer& b, const Q& q) { q.core_.EncodeHandle(b); }
  static bool Decode(DecodeReader& r, Q& out) { return out.core_.DecodeHandle(r); }
};
}  // namespace ipc_internal

template <typename T>
struct Codec<Queue<T>> : ipc_internal::QueueHandleCodec<Queue<T>> {};
template <typename T>
struct Codec<SimpleQueue<T>> : ipc_internal::QueueHandleCodec<SimpleQueue<T>> {};
template <typename T>
struct Codec<JoinableQueue<T>> : ipc_internal::QueueHandleCodec<JoinableQueue<T>> {};

}  // namespace mproc

#endif  // MPROC_IPC_QUEUE_H_
