// ipc/queue.h — Queue<T>, SimpleQueue<T>, JoinableQueue<T>: CPython's multiprocessing queues,
// without the feeder thread.
//
//   MPROC_ASSIGN_OR_RETURN(Queue<Job> q, Queue<Job>::Create(/*maxsize=*/100));
//   MPROC_RETURN_IF_ERROR(q.Put(job));                        // in any process holding q
//   MPROC_ASSIGN_OR_RETURN(Job j, q.Get(absl::Seconds(1)));   // in any other
//
// The channel is one SOCK_SEQPACKET socket pair shared by every handle in every process
// (passed to children as a handle: Codec<Queue<T>>). Each item is one record, so:
//   * Dequeue is atomic per item: the kernel hands a whole record to exactly one receiver, and
//     a consumer SIGKILLed in the middle of Get loses at most the item it had received — the
//     channel never desynchronises for the others (a byte-stream pipe cannot promise this).
//   * Put is durable: it returns once the record sits in the socket's receive queue, which
//     outlives the producer. Encoding happens in the caller, so an unencodable item fails at
//     Put, and there is no feeder thread: a producer exits at once even if nobody reads.
//   * FIFO per producer; nothing lost, nothing duplicated. Items larger than 64 KiB travel
//     out of line in a sealed memfd whose descriptor rides in the record (0 B to 64 MiB and
//     beyond, limited by memory). Items whose T carries descriptors work (it is a socket).
//   * The byte budget of an unbounded queue is the socket's send buffer (net.core.wmem_default,
//     about 200 KiB of records here, a few hundred small items): past it Put blocks (or times
//     out), as a full pipe would. maxsize > 0 bounds the item count exactly.
//
// Errors (DESIGN.md table): PutNowait on a full queue RESOURCE_EXHAUSTED, GetNowait on an
// empty one UNAVAILABLE; a blocking Put/Get whose timeout passes DEADLINE_EXCEEDED; after
// Close() (this process's handles), Put/Get are FAILED_PRECONDITION — and Close from another
// thread wakes a blocked Get with FAILED_PRECONDITION. TaskDone more often than items were put
// is FAILED_PRECONDITION.
//
// Qsize() is approximate (a shared counter updated around each send/receive; a consumer killed
// between receiving and counting leaves it one too high), as CPython documents its own. Empty()
// asks the socket. A consumer killed between receiving an item and releasing its maxsize slot
// leaks that slot (capacity drops by one); unbounded queues have no slots.
//
// Thread-safety: all calls are thread-safe; handles are cheap to copy and share the queue.
// Fork children: a copied handle keeps working in the child (the sockets are inherited).

#ifndef MPROC_IPC_QUEUE_H_
#define MPROC_IPC_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/deadline.h"
#include "base/unique_fd.h"
#include "serialize/buffer.h"
#include "serialize/codec.h"

namespace mproc {
namespace ipc_internal {

struct QueueShared;
template <typename Q>
struct QueueHandleCodec;

// The type-independent queue: records of encoded bytes and descriptors.
class QueueCore {
 public:
  static absl::StatusOr<QueueCore> Create(size_t maxsize, bool joinable);
  QueueCore() = default;

  absl::Status Put(const EncodeBuffer& item, const Deadline& deadline, bool block);
  // Puts items in order, up to 32 per system call (sendmmsg or one io_uring submission);
  // `*put` counts those put, also on error.
  absl::Status PutMany(std::span<const EncodeBuffer> items, const Deadline& deadline, bool block,
                       size_t* put);
  // Receives one item: its bytes (in `bytes`) and descriptors.
  absl::Status Get(const Deadline& deadline, bool block, std::string* bytes,
                   std::vector<UniqueFd>* fds);

  size_t Qsize() const;
  bool Empty() const;
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
  std::shared_ptr<QueueShared> s_;
};

}  // namespace ipc_internal

template <typename T>
class Queue {
 public:
  // maxsize 0: unbounded (up to the byte budget).
  static absl::StatusOr<Queue> Create(size_t maxsize = 0) {
    absl::StatusOr<ipc_internal::QueueCore> c = ipc_internal::QueueCore::Create(maxsize, false);
    if (!c.ok()) return c.status();
    return Queue(*std::move(c));
  }
  Queue() = default;

  absl::Status Put(const T& item, absl::Duration timeout = absl::InfiniteDuration()) {
    return PutImpl(item, Deadline::After(timeout), true);
  }
  absl::Status PutNowait(const T& item) { return PutImpl(item, Deadline::After(absl::ZeroDuration()), false); }
  // Puts every item, in order, as separate items (each Get takes one), up to 32 per system call
  // (base/io_ring.h: sendmmsg, or one io_uring submission). Each item is durable as Put's; on
  // an error or timeout the first `*put` items were put and the rest were not.
  absl::Status PutMany(std::span<const T> items, absl::Duration timeout = absl::InfiniteDuration(),
                       size_t* put = nullptr) {
    std::vector<EncodeBuffer> bufs(items.size());
    for (size_t i = 0; i < items.size(); ++i) Encode(items[i], bufs[i]);
    size_t n = 0;
    absl::Status st = core_.PutMany(bufs, Deadline::After(timeout), true, put ? put : &n);
    return st;
  }
  absl::StatusOr<T> Get(absl::Duration timeout = absl::InfiniteDuration()) {
    return GetImpl(Deadline::After(timeout), true);
  }
  absl::StatusOr<T> GetNowait() { return GetImpl(Deadline::After(absl::ZeroDuration()), false); }

  size_t Qsize() const { return core_.Qsize(); }
  bool Empty() const { return core_.Empty(); }
  bool Full() const { return core_.Full(); }
  size_t maxsize() const { return core_.maxsize(); }
  // This process stops using the queue: Put/Get fail from now on; a blocked Get wakes.
  void Close() { core_.Close(); }
  bool closed() const { return core_.closed(); }

 protected:
  explicit Queue(ipc_internal::QueueCore core) : core_(std::move(core)) {}
  absl::Status PutImpl(const T& item, const Deadline& d, bool block) {
    EncodeBuffer buf;
    Encode(item, buf);
    return core_.Put(buf, d, block);
  }
  absl::StatusOr<T> GetImpl(const Deadline& d, bool block) {
    std::string bytes;
    std::vector<UniqueFd> fds;
    absl::Status s = core_.Get(d, block, &bytes, &fds);
    if (!s.ok()) return s;
    return Decode<T>(std::as_bytes(std::span(bytes.data(), bytes.size())), std::move(fds));
  }

  template <typename Q>
  friend struct ipc_internal::QueueHandleCodec;
  ipc_internal::QueueCore core_;
};

// CPython's SimpleQueue: unbounded Put/Get/Empty/Close (the same channel, no slots).
template <typename T>
class SimpleQueue : public Queue<T> {
 public:
  static absl::StatusOr<SimpleQueue> Create() {
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
  static absl::StatusOr<JoinableQueue> Create(size_t maxsize = 0) {
    absl::StatusOr<ipc_internal::QueueCore> c = ipc_internal::QueueCore::Create(maxsize, true);
    if (!c.ok()) return c.status();
    return JoinableQueue(*std::move(c));
  }
  JoinableQueue() = default;

  absl::Status TaskDone() { return this->core_.TaskDone(); }
  // OK once every item is done; DEADLINE_EXCEEDED when the timeout passes first.
  absl::Status Join(absl::Duration timeout = absl::InfiniteDuration()) {
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
