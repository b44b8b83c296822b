#include "manager/internal/server.h"

#include <signal.h>
#include <liburing.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <cerrno>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <set>
#include <stop_token>
#include <string_view>
#include <memory>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/deadline.h"
#include "base/io_ring.h"
#include "base/mutex.h"
#include "base/spin.h"
#include "base/status.h"
#include "base/syscall.h"
#include "manager/internal/client.h"
#include "manager/internal/objects.h"
#include "manager/internal/protocol.h"
#include "pool/internal/pool_core.h"
#include "serialize/auth.h"
#include "serialize/cpython_framing.h"
#include "shm/shared_memory.h"
#include "spawn/process.h"

namespace mproc::manager_internal {
namespace {

using Bytes = std::string;

constexpr int64_t kHandshakeNs = 10'000'000'000;  // a client's whole handshake
constexpr int64_t kTicketNs = 60'000'000'000;     // an unclaimed ticket's life
constexpr int64_t kClaimWaitNs = 10'000'000'000;  // a claim waiting for its ticket to arrive

// A dict that keeps insertion order, as Python's.
class OrderedDict {
 public:
  bool Contains(const Bytes& k) const { return index_.count(k) != 0; }
  const Bytes* Find(const Bytes& k) const {
    auto it = index_.find(k);
    return it == index_.end() ? nullptr : &it->second->second;
  }
  Bytes* Find(const Bytes& k) {
    auto it = index_.find(k);
    return it == index_.end() ? nullptr : &it->second->second;
  }
  void Set(const Bytes& k, Bytes v) {
    auto it = index_.find(k);
    if (it != index_.end()) {
      it->second->second = std::move(v);
      return;
    }
    entries_.emplace_back(k, std::move(v));
    index_.emplace(k, std::prev(entries_.end()));
  }
  bool Erase(const Bytes& k, Bytes* value = nullptr) {
    auto it = index_.find(k);
    if (it == index_.end()) return false;
    if (value != nullptr) *value = std::move(it->second->second);
    entries_.erase(it->second);
    index_.erase(it);
    return true;
  }
  void Clear() {
    entries_.clear();
    index_.clear();
  }
  size_t size() const { return entries_.size(); }
  const std::list<std::pair<Bytes, Bytes>>& entries() const { return entries_; }

 private:
  std::list<std::pair<Bytes, Bytes>> entries_;
  std::unordered_map<Bytes, std::list<std::pair<Bytes, Bytes>>::iterator> index_;
};

// A call the server could not answer yet (a blocking method), kept until it can or its
// timeout passes. Its connection is named by fd and serial (an fd number is reused).
struct Parked {
  int fd = -1;
  uint64_t serial = 0;
  uint64_t call_id = 0;
  int64_t deadline_ns = INT64_MAX;
  Bytes item;             // a Queue Put's item
  uint64_t tid = 0;       // a Lock or Condition caller's thread
  int64_t depth = 0;      // a Condition waiter's saved RLock depth
  bool reacquire = false; // a Condition waiter taking its lock back (answer: `notified`)
  bool notified = false;
  uint64_t generation = 0;  // a Barrier waiter's round
};

struct Object {
  Kind kind;
  uint64_t fingerprint = 0;
  std::string type_name;  // a kObject made by name (kNamedObject): its registered type
  int64_t refs = 0;  // connections' references plus tickets
  OrderedDict dict;
  std::vector<Bytes> list;
  Bytes value;
  std::map<std::string, Bytes> ns;
  std::set<Bytes> set;
  // References this object's kept values hold through embedded proxies (stamps): object -> n.
  std::map<uint64_t, int64_t> embedded;
  // Queue
  std::deque<Bytes> items;
  uint64_t maxsize = 0;
  bool joinable = false;
  int64_t unfinished = 0;
  std::deque<Parked> getters, putters, joiners;
  // Lock and RLock: the owner is (connection serial, thread id)
  bool recursive = false;
  uint64_t owner_serial = 0;  // 0: free
  uint64_t owner_tid = 0;
  int64_t depth = 0;
  bool owner_died = false;    // the holder's client died holding it: the next acquirer is told
  std::deque<Parked> lock_waiters;
  // Semaphore
  int64_t sem_value = 0, sem_initial = 0;
  bool bounded = false;
  std::deque<Parked> sem_waiters;
  // Event
  bool flag = false;
  std::deque<Parked> event_waiters;
  // Condition
  uint64_t cond_lock = 0;
  std::deque<Parked> cond_waiters;
  // A user-type object (objects.h)
  std::shared_ptr<void> user;
  // A Pool (its workers are this server's children)
  std::shared_ptr<pool_internal::PoolCore> pool;
  // Barrier
  int64_t parties = 0, arrived = 0;
  uint64_t generation = 0;
  bool broken = false;
  std::deque<Parked> barrier_waiters;

  bool HasWaiters() const {
    return !getters.empty() || !putters.empty() || !joiners.empty() || !lock_waiters.empty() ||
           !sem_waiters.empty() || !event_waiters.empty() || !cond_waiters.empty() ||
           !barrier_waiters.empty();
  }
};

// What a method returns: OK with result bytes, or an error status.
using Result = absl::StatusOr<EncodeBuffer>;

template <typename... A>
absl::StatusOr<std::tuple<A...>> Args(DecodeReader& r) {
  std::tuple<A...> t;
  if (!Codec<std::tuple<A...>>::Decode(r, t)) return r.status();
  if (r.remaining() != 0) return absl::InvalidArgumentError("trailing bytes after the arguments");
  return t;
}

template <typename T>
EncodeBuffer Out(const T& v) {
  EncodeBuffer b;
  Encode(v, b);
  return b;
}

// Python's index rules: negative counts from the end; OUT_OF_RANGE (IndexError) outside.
absl::StatusOr<size_t> Index(int64_t i, size_t size) {
  const int64_t n = static_cast<int64_t>(size);
  if (i < 0) i += n;
  if (i < 0 || i >= n) return absl::OutOfRangeError("IndexError: list index out of range");
  return static_cast<size_t>(i);
}

// Python's slice clamping for a step of 1.
size_t Clamp(int64_t i, size_t size) {
  const int64_t n = static_cast<int64_t>(size);
  if (i < 0) i = std::max<int64_t>(0, i + n);
  return static_cast<size_t>(std::min(i, n));
}

// Runs the user's method named in the request on a value kept as bytes (objects.h).
Result ApplyOnBytes(Bytes* stored, DecodeReader& r) {
  BytesEntry entry = nullptr;
  if (!Codec<BytesEntry>::Decode(r, entry) || entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the update cannot run in this server (", r.status().message(),
        "): an update with your own code needs a server of the same executable"));
  }
  EncodeBuffer out;
  entry(stored, r, out);
  return out;
}

Result CallDict(OrderedDict& d, Method m, DecodeReader& r) {
  switch (m) {
    case Method::kDictSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<Bytes, Bytes>(r)));
      d.Set(std::get<0>(a), std::move(std::get<1>(a)));
      return EncodeBuffer();
    }
    case Method::kDictGet: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      const Bytes* v = d.Find(std::get<0>(a));
      if (v == nullptr) return absl::NotFoundError("KeyError: the key is not in the dict");
      return Out(*v);
    }
    case Method::kDictContains: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      return Out(d.Contains(std::get<0>(a)));
    }
    case Method::kDictDel: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      if (!d.Erase(std::get<0>(a))) return absl::NotFoundError("KeyError: the key is not in the dict");
      return EncodeBuffer();
    }
    case Method::kDictLen:
      return Out(static_cast<uint64_t>(d.size()));
    case Method::kDictKeys: {
      std::vector<Bytes> out;
      for (const auto& [k, v] : d.entries()) out.push_back(k);
      return Out(out);
    }
    case Method::kDictValues: {
      std::vector<Bytes> out;
      for (const auto& [k, v] : d.entries()) out.push_back(v);
      return Out(out);
    }
    case Method::kDictItems: {
      std::vector<std::pair<Bytes, Bytes>> out(d.entries().begin(), d.entries().end());
      return Out(out);
    }
    case Method::kDictClear:
      d.Clear();
      return EncodeBuffer();
    case Method::kDictPop: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      Bytes v;
      if (!d.Erase(std::get<0>(a), &v)) return absl::NotFoundError("KeyError: the key is not in the dict");
      return Out(v);
    }
    case Method::kDictSetDefault: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<Bytes, Bytes>(r)));
      if (const Bytes* v = d.Find(std::get<0>(a))) return Out(*v);
      d.Set(std::get<0>(a), std::get<1>(a));
      return Out(std::get<1>(a));
    }
    case Method::kDictUpdate: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<std::vector<std::pair<Bytes, Bytes>>>(r)));
      for (auto& [k, v] : std::get<0>(a)) d.Set(k, std::move(v));
      return EncodeBuffer();
    }
    case Method::kDictCompareSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<Bytes, std::optional<Bytes>, Bytes>(r)));
      auto& [key, expected, desired] = a;
      const Bytes* now = d.Find(key);
      const bool match = expected.has_value() ? (now != nullptr && *now == *expected) : now == nullptr;
      if (match) d.Set(key, std::move(desired));
      return Out(match);
    }
    case Method::kDictApply: {
      Bytes key;
      if (!Codec<Bytes>::Decode(r, key)) return r.status();
      Bytes* v = d.Find(key);
      if (v == nullptr) return absl::NotFoundError("KeyError: the key is not in the dict");
      return ApplyOnBytes(v, r);
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a dict");
}

constexpr uint64_t kMaxContainerBytes = 1ull << 30;  // what one l *= n may grow a list to

Result CallList(std::vector<Bytes>& l, Method m, DecodeReader& r, bool fixed_size = false) {
  if (fixed_size) {
    switch (m) {
      case Method::kListGet: case Method::kListSet: case Method::kListLen:
      case Method::kListIndex: case Method::kListCount: case Method::kListSlice:
      case Method::kListAll: case Method::kListSetSlice:
        break;
      default:
        return absl::InvalidArgumentError("not a method of an array");
    }
  }
  switch (m) {
    case Method::kListAppend: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      l.push_back(std::move(std::get<0>(a)));
      return EncodeBuffer();
    }
    case Method::kListExtend: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<std::vector<Bytes>>(r));
      for (Bytes& v : std::get<0>(a)) l.push_back(std::move(v));
      return EncodeBuffer();
    }
    case Method::kListGet: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
      MPROC_ASSIGN_OR_RETURN(size_t i, Index(std::get<0>(a), l.size()));
      return Out(l[i]);
    }
    case Method::kListSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<int64_t, Bytes>(r)));
      MPROC_ASSIGN_OR_RETURN(size_t i, Index(std::get<0>(a), l.size()));
      l[i] = std::move(std::get<1>(a));
      return EncodeBuffer();
    }
    case Method::kListLen:
      return Out(static_cast<uint64_t>(l.size()));
    case Method::kListPop: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
      if (l.empty()) return absl::OutOfRangeError("IndexError: pop from empty list");
      MPROC_ASSIGN_OR_RETURN(size_t i, Index(std::get<0>(a), l.size()));
      Bytes v = std::move(l[i]);
      l.erase(l.begin() + static_cast<ptrdiff_t>(i));
      return Out(v);
    }
    case Method::kListInsert: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<int64_t, Bytes>(r)));
      const size_t i = Clamp(std::get<0>(a), l.size());
      l.insert(l.begin() + static_cast<ptrdiff_t>(i), std::move(std::get<1>(a)));
      return EncodeBuffer();
    }
    case Method::kListRemove:
    case Method::kListIndex: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      auto it = std::find(l.begin(), l.end(), std::get<0>(a));
      if (it == l.end()) return absl::NotFoundError("ValueError: the value is not in the list");
      if (m == Method::kListIndex) return Out(static_cast<uint64_t>(it - l.begin()));
      l.erase(it);
      return EncodeBuffer();
    }
    case Method::kListCount: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      return Out(static_cast<uint64_t>(std::count(l.begin(), l.end(), std::get<0>(a))));
    }
    case Method::kListReverse:
      std::reverse(l.begin(), l.end());
      return EncodeBuffer();
    case Method::kListClear:
      l.clear();
      return EncodeBuffer();
    case Method::kListSlice: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<int64_t, int64_t>(r)));
      const size_t b = Clamp(std::get<0>(a), l.size());
      const size_t e = Clamp(std::get<1>(a), l.size());
      std::vector<Bytes> out;
      if (b < e) out.assign(l.begin() + static_cast<ptrdiff_t>(b), l.begin() + static_cast<ptrdiff_t>(e));
      return Out(out);
    }
    case Method::kListAll:
      return Out(l);
    case Method::kListSetSlice: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<int64_t, int64_t, std::vector<Bytes>>(r)));
      auto& [start, stop, values] = a;
      const size_t b = Clamp(start, l.size());
      const size_t e = std::max(b, Clamp(stop, l.size()));
      if (fixed_size && values.size() != e - b) {
        return absl::InvalidArgumentError(absl::StrCat(
            "ValueError: an array's slice of ", e - b, " elements cannot be assigned ",
            values.size(), " (an array keeps its size)"));
      }
      l.erase(l.begin() + static_cast<ptrdiff_t>(b), l.begin() + static_cast<ptrdiff_t>(e));
      l.insert(l.begin() + static_cast<ptrdiff_t>(b), std::make_move_iterator(values.begin()),
               std::make_move_iterator(values.end()));
      return EncodeBuffer();
    }
    case Method::kListRepeat: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
      const int64_t n = std::get<0>(a);
      if (n <= 0 || l.empty()) {
        l.clear();
        return EncodeBuffer();
      }
      uint64_t bytes = 0;
      for (const Bytes& v : l) bytes += v.size() + sizeof(Bytes);
      if (static_cast<uint64_t>(n) > kMaxContainerBytes / bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "MemoryError: repeating a list of ", bytes, " bytes ", n, " times passes the ",
            kMaxContainerBytes, "-byte limit"));
      }
      const size_t size = l.size();
      l.reserve(size * static_cast<size_t>(n));
      for (int64_t i = 1; i < n; ++i) {
        for (size_t j = 0; j < size; ++j) l.push_back(l[j]);
      }
      return EncodeBuffer();
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a list");
}

Result CallSet(std::set<Bytes>& s, Method m, DecodeReader& r) {
  switch (m) {
    case Method::kSetAdd: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      return Out(s.insert(std::move(std::get<0>(a))).second);
    }
    case Method::kSetDiscard: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      return Out(s.erase(std::get<0>(a)) != 0);
    }
    case Method::kSetRemove: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      if (s.erase(std::get<0>(a)) == 0) return absl::NotFoundError("KeyError: not in the set");
      return EncodeBuffer();
    }
    case Method::kSetPop: {
      if (s.empty()) return absl::NotFoundError("KeyError: pop from an empty set");
      Bytes v = std::move(s.extract(s.begin()).value());
      return Out(v);
    }
    case Method::kSetContains: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      return Out(s.count(std::get<0>(a)) != 0);
    }
    case Method::kSetLen:
      return Out(static_cast<uint64_t>(s.size()));
    case Method::kSetAll:
      return Out(std::vector<Bytes>(s.begin(), s.end()));
    case Method::kSetClear:
      s.clear();
      return EncodeBuffer();
    case Method::kSetUpdate: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<std::vector<Bytes>>(r));
      for (Bytes& v : std::get<0>(a)) s.insert(std::move(v));
      return EncodeBuffer();
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a set");
}

Result CallValue(Bytes& v, Method m, DecodeReader& r) {
  switch (m) {
    case Method::kValueApply:
      return ApplyOnBytes(&v, r);
    case Method::kValueGet:
      return Out(v);
    case Method::kValueSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<Bytes>(r));
      v = std::move(std::get<0>(a));
      return EncodeBuffer();
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a value");
}

Result CallNamespace(std::map<std::string, Bytes>& ns, Method m, DecodeReader& r) {
  switch (m) {
    case Method::kNsGet: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<std::string>(r));
      auto it = ns.find(std::get<0>(a));
      if (it == ns.end()) {
        return absl::NotFoundError(absl::StrCat("AttributeError: the namespace has no '",
                                                std::get<0>(a), "'"));
      }
      return Out(it->second);
    }
    case Method::kNsSet: {
      MPROC_ASSIGN_OR_RETURN(auto a, (Args<std::string, Bytes>(r)));
      ns[std::get<0>(a)] = std::move(std::get<1>(a));
      return EncodeBuffer();
    }
    case Method::kNsDel: {
      MPROC_ASSIGN_OR_RETURN(auto a, Args<std::string>(r));
      if (ns.erase(std::get<0>(a)) == 0) {
        return absl::NotFoundError(absl::StrCat("AttributeError: the namespace has no '",
                                                std::get<0>(a), "'"));
      }
      return EncodeBuffer();
    }
    case Method::kNsNames: {
      std::vector<std::string> names;
      for (const auto& [k, v] : ns) names.push_back(k);
      return Out(names);
    }
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of a namespace");
}

// Calls fn(offset) for each stamp of the server `nonce` in `bytes` (protocol.h).
template <typename F>
void ForEachStamp(std::string_view bytes, uint64_t nonce, F fn) {
  char needle[16];
  std::memcpy(needle, &kEmbedMagic, 8);
  std::memcpy(needle + 8, &nonce, 8);
  size_t pos = 0;
  while (pos + kStampSize <= bytes.size()) {
    const void* hit = ::memmem(bytes.data() + pos, bytes.size() - pos, needle, sizeof(needle));
    if (hit == nullptr) return;
    const size_t at = static_cast<size_t>(static_cast<const char*>(hit) - bytes.data());
    if (at + kStampSize > bytes.size()) return;
    fn(at);
    pos = at + kStampSize;
  }
}

uint64_t StampObject(std::string_view bytes, size_t at) {
  uint64_t id = 0;
  std::memcpy(&id, bytes.data() + at + 16, 8);
  return id;
}

class Server {
 public:
  Server(UniqueFd listener, ServerConfig config, std::stop_token stop)
      : listener_(std::move(listener)), config_(std::move(config)), stop_token_(std::move(stop)) {}
  // Pools end first (Finish does it too, but a loop that failed returns without it): their
  // threads' callbacks use done_mu_, done_ and done_fd_, which are destroyed before objects_.
  ~Server() { objects_.clear(); }

  int Run();

 private:
  struct Conn {
    UniqueFd fd;
    uint64_t serial = 0;  // unique for the server's life (fd numbers are reused)
    std::unique_ptr<ServerHandshaker> handshake;  // until authenticated
    int64_t handshake_deadline_ns = 0;
    std::string in;       // bytes received, not yet a whole message
    std::string out;      // replies not yet written
    size_t out_done = 0;  // ...of which written
    bool want_write = false;
    // io_uring backend: the bytes of the send in flight (replies made meanwhile wait in
    // `out`), and whether a multishot receive is armed.
    std::string sending;
    size_t sending_done = 0;
    bool send_in_flight = false;
    std::unordered_map<uint64_t, int64_t> refs;  // object -> references this connection holds
  };
  struct Ticket {
    uint64_t object;
    int64_t expires_ns;
  };
  struct ForkLease {
    std::vector<uint64_t> objects;
    int64_t expires_ns;
  };
  struct ParkedClaim {
    int conn;
    uint64_t call_id;
    uint64_t ticket;
    uint64_t fingerprint;
    uint8_t kind;  // the kind of proxy claiming (0: not said)
    int64_t deadline_ns;
  };

  void Accept();
  void Close(int fd);
  // Blocking objects (Queue, Lock, Semaphore, Event, Condition, Barrier).
  Result CallBlocking(Conn& c, uint64_t id, Object& o, Method m, DecodeReader& r,
                      uint64_t call_id, bool* parked);
  void Answer(const Parked& p, const absl::Status& status, const EncodeBuffer* body);
  void PumpQueue(Object& o);
  void GrantLock(Object& lock);
  void PumpSemaphore(Object& o);
  void BreakBarrier(Object& o);
  void DropConnection(uint64_t serial);
  void ExpireParked(int64_t now);
  Parked ParkFor(Conn& c, uint64_t call_id, int64_t timeout_ns) const;
  Result CallObject(Conn& c, Object& o, Method m, DecodeReader& r);
  void OnReadable(int fd);
  void Flush(Conn& c);
  // After bytes arrived in c.in: dispatch the whole requests, then send the replies. False
  // when the connection was closed.
  bool Consume(int fd, Conn& c);
  // Bytes queued for c and not yet written.
  static size_t Unsent(const Conn& c) {
    return c.out.size() - c.out_done + c.sending.size() - c.sending_done;
  }

  // The io_uring backend (any I/O mode but plain; base/io_ring.h): a multishot accept, a
  // multishot receive per connection into a ring of provided buffers, sends queued as SQEs
  // and submitted with the wait for the next completions: one io_uring_enter per loop turn
  // where epoll needs epoll_wait, recv and send.
  int Finish();
  int RunUring();
  bool UringInit();
  bool ProbeMultishotRecv();
  io_uring_sqe* Sqe();
  // The provided buffer a receive completion filled, and handing it back to the ring.
  const char* BufferOf(const io_uring_cqe& cqe) const;
  void RecycleBuffer(const io_uring_cqe& cqe);
  void ArmAccept();
  void ArmDonePoll();
  void ArmHandshakePoll(const Conn& c);
  void ArmRecv(const Conn& c);
  void SendNext(Conn& c);
  void OnUringCqe(const io_uring_cqe& cqe);
  void AddConn(UniqueFd fd);
  Conn* BySerial(uint64_t serial);
  bool HandshakeStep(int fd, Conn& c);  // false when it closed the connection
  // Handles every whole message in c.in; false when the connection must close.
  bool Dispatch(Conn& c);
  bool Handle(Conn& c, std::span<const std::byte> msg);
  void Reply(Conn& c, uint64_t call_id, const absl::Status& status, const EncodeBuffer* body);
  void Ref(Conn& c, uint64_t id, int64_t n);
  void Unref(uint64_t id, int64_t n);
  absl::Status Claim(Conn& c, uint64_t ticket, uint64_t fingerprint, uint8_t kind, bool* parked,
                     uint64_t call_id);
  void Expire(int64_t now);
  int64_t NextWakeNs() const;
  // After a stop: a send's completion (others are ignored) leaves its connection with nothing
  // in flight and the unsent rest of its reply queued first, for Finish to write.
  void SettleSendAtStop(const io_uring_cqe& cqe);
  // Before the loop sleeps: whether to look for events first, and until when. A client usually
  // sends its next request within microseconds of its reply, and a sleeping server costs it a
  // wake-up (10-20 us here), so the loop looks until the spin budget (base/spin.h: 50 us by
  // default, MPROC_SPIN_US) has passed since the end of the last turn that served a request,
  // or until `wake` (a parked call's timeout), whichever is first. Events that are not
  // requests (a send's completion) do not extend the window; an idle server sleeps at once.
  bool SpinWindow(int64_t wake, int64_t* until) {
    if (served_this_turn_) {
      served_this_turn_ = false;
      last_served_ns_ = MonotonicNowNs();  // the turn's replies are written (or submitted next)
    }
    if (last_served_ns_ < 0) return false;
    *until = std::min(wake, last_served_ns_ + SpinBudgetNs());
    if (MonotonicNowNs() < *until) return true;
    last_served_ns_ = -1;
    return false;
  }
  // Checks `ready` (a non-blocking look for events), yielding the CPU between looks, until
  // `until`.
  template <typename Ready>
  void LookUntil(int64_t until, Ready ready) {
    (void)SpinUntil([&] { return stop_ || ready(); }, Deadline::AtMonotonicNs(until),
                    SpinMode::kYield);
  }
  bool served_this_turn_ = false;  // Handle read a request in this turn
  int64_t last_served_ns_ = -1;    // when the last turn that served one ended (-1: long ago)
  // Nested proxies: recounts the stamps in object `id`'s kept values and moves its references
  // to match (after any call that may have changed them).
  void Rescan(uint64_t id);
  bool HasStamp(std::string_view bytes) const {
    bool found = false;
    ForEachStamp(bytes, nonce_, [&](size_t) { found = true; });
    return found;
  }
  // Fills the ticket slot of each stamp in an outgoing reply with a fresh ticket.
  void IssueTickets(std::string& out, size_t from);

  UniqueFd listener_;
  ServerConfig config_;
  UniqueFd epoll_;
  bool uring_ = false;
  io_uring ring_{};
  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  std::unique_ptr<char[]> bufs_;
  std::unordered_map<uint64_t, int> fd_of_serial_;
  std::unordered_map<uint64_t, std::string> graveyard_;  // sends in flight of closed connections
  const uint64_t nonce_ = config_.nonce;
  std::unordered_map<int, Conn> conns_;
  std::unordered_map<uint64_t, Object> objects_;
  uint64_t next_object_ = 1;
  std::unordered_map<uint64_t, Ticket> tickets_;
  std::unordered_map<uint64_t, ForkLease> fork_leases_;
  uint64_t next_serial_ = 1;
  std::set<uint64_t> waiting_objects_;  // objects with parked calls
  std::vector<ParkedClaim> parked_;
  bool stop_ = false;
  std::vector<SharedMemory> segments_;  // made for clients (kShmCreate), unlinked at the end
  uint64_t ticket_state_ = nonce_ * 0x9e3779b97f4a7c15ull + 1;  // the server's own ticket ids

  // Pool runs: a kPoolRun call waits for all its tasks. Their completions arrive on pool
  // threads, are queued under done_mu_ and handed to the loop through done_fd_ (an eventfd).
  using TaskOutcome = std::tuple<uint8_t, std::string, std::string>;
  struct PoolRun {
    Parked caller;
    size_t left = 0;
    std::vector<TaskOutcome> outcomes;
  };
  struct TaskDoneNote {
    uint64_t run;
    size_t index;
    TaskOutcome outcome;
  };
  Result CallPool(Conn& c, Object& o, Method m, DecodeReader& r, uint64_t call_id,
                  bool* parked);
  void FinishTasks();
  std::unordered_map<uint64_t, PoolRun> runs_;
  uint64_t next_run_ = 1;
  UniqueFd done_fd_;
  Mutex done_mu_;
  std::vector<TaskDoneNote> done_ ABSL_GUARDED_BY(done_mu_);

  // Serve's stop request (another thread's request_stop): it rings done_fd_, whose handler
  // then sees the token stopped and ends the loop as a shutdown request would. Declared last,
  // so destroyed first: ~stop_callback waits for a callback running on another thread before
  // done_fd_ closes.
  std::stop_token stop_token_;
  std::optional<std::stop_callback<std::function<void()>>> on_stop_;
  void RingDone() {
    uint64_t one = 1;
    (void)!::write(done_fd_.get(), &one, sizeof(one));
  }
};

void Server::Accept() {
  for (;;) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd.ok()) return;  // EAGAIN, or a client gone before we took it
    AddConn(std::move(fd));
  }
}

void Server::AddConn(UniqueFd fd) {
  TuneTcp(fd.get());
  Conn c;
  c.handshake = std::make_unique<ServerHandshaker>(fd.get(), config_.authkey);
  if (!c.handshake->Start().ok()) return;
  c.handshake_deadline_ns = MonotonicNowNs() + kHandshakeNs;
  c.serial = next_serial_++;
  const int key = fd.get();
  c.fd = std::move(fd);
  if (uring_) {
    fd_of_serial_[c.serial] = key;
    ArmHandshakePoll(c);
  } else {
    epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = key;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, key, &ev) != 0) return;
  }
  conns_[key] = std::move(c);
}

void Server::Close(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  // The lease ends with the connection: every reference it held is dropped.
  std::unordered_map<uint64_t, int64_t> refs = std::move(it->second.refs);
  const uint64_t serial = it->second.serial;
  if (uring_) {
    // The kernel may still read a send's bytes: they live until its completion. shutdown
    // ends the multishot receive (and tells the client at once); the close follows.
    if (it->second.send_in_flight) graveyard_[serial] = std::move(it->second.sending);
    fd_of_serial_.erase(serial);
    ::shutdown(fd, SHUT_RDWR);
  } else {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }
  conns_.erase(it);
  std::erase_if(parked_, [fd](const ParkedClaim& p) { return p.conn == fd; });
  // Its parked calls go, and the locks it held are freed, the next taker told their owner died.
  DropConnection(serial);
  for (const auto& [id, n] : refs) Unref(id, n);
}

void Server::Ref(Conn& c, uint64_t id, int64_t n) {
  c.refs[id] += n;
  objects_[id].refs += n;
}

void Server::Unref(uint64_t id, int64_t n) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  it->second.refs -= n;
  if (it->second.refs > 0) return;
  const uint64_t held_lock = it->second.kind == Kind::kCondition ? it->second.cond_lock : 0;
  std::map<uint64_t, int64_t> embedded = std::move(it->second.embedded);
  objects_.erase(it);
  waiting_objects_.erase(id);
  if (held_lock != 0) Unref(held_lock, 1);  // a Condition holds its lock
  for (const auto& [e, n] : embedded) Unref(e, n);  // what its kept values referenced
}

void Server::Rescan(uint64_t id) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  const Object& o = it->second;
  std::map<uint64_t, int64_t> now;
  auto count = [&](std::string_view bytes) {
    ForEachStamp(bytes, nonce_, [&](size_t at) {
      const uint64_t e = StampObject(bytes, at);
      if (objects_.count(e) != 0) now[e] += 1;  // a stamp of a dead object holds nothing
    });
  };
  for (const auto& [k, v] : o.dict.entries()) {
    count(k);
    count(v);
  }
  for (const Bytes& v : o.list) count(v);
  count(o.value);
  for (const auto& [k, v] : o.ns) count(v);
  for (const Bytes& v : o.set) count(v);
  for (const Bytes& v : o.items) count(v);
  for (const Parked& p : o.putters) count(p.item);
  std::map<uint64_t, int64_t> before = std::move(it->second.embedded);
  it->second.embedded = now;
  // Take the new references first, so nothing still kept is freed on the way.
  for (const auto& [e, n] : now) {
    auto b = before.find(e);
    const int64_t more = n - (b == before.end() ? 0 : b->second);
    if (more > 0) objects_.find(e)->second.refs += more;
  }
  for (const auto& [e, n] : before) {
    auto a = now.find(e);
    const int64_t fewer = n - (a == now.end() ? 0 : a->second);
    if (fewer > 0) Unref(e, fewer);
  }
}

void Server::IssueTickets(std::string& out, size_t from) {
  const std::string_view view(out.data() + from, out.size() - from);
  ForEachStamp(view, nonce_, [&](size_t at) {
    const uint64_t e = StampObject(view, at);
    auto obj = objects_.find(e);
    uint64_t ticket = 0;
    if (obj != objects_.end()) {
      do {  // splitmix64: ticket ids of the server's own, never 0
        uint64_t z = (ticket_state_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        ticket = z ^ (z >> 31);
      } while (ticket == 0 || tickets_.count(ticket) != 0);
      tickets_[ticket] = Ticket{e, MonotonicNowNs() + kTicketNs};
      obj->second.refs += 1;
    }
    std::memcpy(out.data() + from + at + 24, &ticket, 8);
  });
}

void Server::Reply(Conn& c, uint64_t call_id, const absl::Status& given,
                   const EncodeBuffer* body) {
  // A reply the client would refuse (and drop the connection for) goes back as an error.
  absl::Status status = given;
  if (status.ok() && body != nullptr && body->size() > kMaxMessage - kMaxRequestHeader) {
    status = absl::ResourceExhaustedError(absl::StrCat(
        "a manager reply of ", body->size(), " bytes is over the ", kMaxMessage >> 20,
        " MiB message limit"));
  }
  EncodeBuffer msg;
  Encode(call_id, msg);
  const uint8_t code = static_cast<uint8_t>(status.code());
  Encode(code, msg);
  if (!status.ok()) {
    Encode(std::string(status.message()), msg);
  } else if (body != nullptr) {
    msg.Append(body->bytes().data(), body->size());
  }
  c.out += CPythonLengthHeader(msg.size());
  const size_t from = c.out.size();
  c.out.append(reinterpret_cast<const char*>(msg.bytes().data()), msg.size());
  if (status.ok() && body != nullptr) IssueTickets(c.out, from);
}

void Server::Flush(Conn& c) {
  if (uring_) return SendNext(c);
  while (c.out_done < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_done, c.out.size() - c.out_done,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        c.out.clear();  // the client is gone: its close comes through epoll
        c.out_done = 0;
      }
      break;
    }
    c.out_done += static_cast<size_t>(n);
  }
  if (c.out_done == c.out.size()) {
    c.out.clear();
    c.out_done = 0;
  } else if (c.out_done > (1 << 20)) {
    c.out.erase(0, c.out_done);
    c.out_done = 0;
  }
  const bool want = !c.out.empty();
  if (want != c.want_write) {
    c.want_write = want;
    epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0);
    ev.data.fd = c.fd.get();
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
  }
}

absl::Status Server::Claim(Conn& c, uint64_t ticket, uint64_t fingerprint, uint8_t kind,
                           bool* parked, uint64_t call_id) {
  *parked = false;
  auto it = tickets_.find(ticket);
  if (it == tickets_.end()) {
    // The ticket may still be on its way (the sender's one-way message, on its own
    // connection): wait for it a while.
    parked_.push_back(
        {c.fd.get(), call_id, ticket, fingerprint, kind, MonotonicNowNs() + kClaimWaitNs});
    *parked = true;
    return absl::OkStatus();
  }
  const uint64_t id = it->second.object;
  auto obj = objects_.find(id);
  if (obj == objects_.end()) {
    tickets_.erase(it);
    return absl::NotFoundError("the proxy's object no longer exists");
  }
  if (obj->second.fingerprint != fingerprint &&
      !(fingerprint == kAnyNamedFingerprint && !obj->second.type_name.empty())) {
    return absl::InvalidArgumentError(
        "the proxy was decoded with other element types than the object was made with");
  }
  // A proxy of another kind (a List sent, read as a Set with the same element type) would
  // call methods its object does not have: refuse it here, where the mistake is.
  if (kind != 0 && kind != static_cast<uint8_t>(obj->second.kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the proxy was decoded as another kind of proxy (kind ", kind, ") than its object (kind ",
        static_cast<int>(obj->second.kind), ")"));
  }
  // The ticket's reference becomes this connection's.
  tickets_.erase(it);
  c.refs[id] += 1;
  return absl::OkStatus();
}

Result Server::CallObject(Conn& c, Object& o, Method m, DecodeReader& r) {
  if (m != Method::kObjectCall && m != Method::kObjectCallNamed) {
    return absl::InvalidArgumentError("not a method of an object");
  }
  ObjectEntry entry = nullptr;
  NamedMethod named;
  if (m == Method::kObjectCallNamed) {
    std::string method;
    if (!Codec<std::string>::Decode(r, method)) return r.status();
    {
      MutexLock lock(&NamedTypesMutex());
      auto t = NamedTypes().find(o.type_name);
      if (t != NamedTypes().end()) {
        auto f = t->second.methods.find(method);
        if (f != t->second.methods.end()) named = f->second;
      }
    }
    if (named.entry == nullptr) {
      return absl::NotFoundError(absl::StrCat(
          "no method \"", method, "\" is registered for ",
          o.type_name.empty() ? std::string("this object (it was not made by name)")
                              : absl::StrCat("type \"", o.type_name, "\"")));
    }
  } else if (!Codec<ObjectEntry>::Decode(r, entry) || entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the method cannot run in this server (", r.status().message(),
        "): an object of your own type needs a server of the same executable"));
  }
  struct Ctx {
    Server* server;
    Conn* conn;
  } ctx{this, &c};
  NewObject make;
  make.ctx = &ctx;
  make.make = [](void* p, std::shared_ptr<void> object, uint64_t fingerprint) -> uint64_t {
    auto* x = static_cast<Ctx*>(p);
    const uint64_t id = x->server->next_object_++;
    Object& n = x->server->objects_[id];
    n.kind = Kind::kObject;
    n.fingerprint = fingerprint;
    n.user = std::move(object);
    x->server->Ref(*x->conn, id, 1);  // the caller's, as a new object it made
    return id;
  };
  EncodeBuffer out;
  std::shared_ptr<void> keep = o.user;  // the method may make objects (objects_ may rehash)
  if (named.entry != nullptr) {
    named.entry(named.fn, keep.get(), r, out, make);
  } else {
    entry(keep.get(), r, out, make);
  }
  return out;
}

Result Server::CallPool(Conn& c, Object& o, Method m, DecodeReader& r, uint64_t call_id,
                        bool* parked) {
  if (m == Method::kPoolProcesses) return Out(static_cast<int64_t>(o.pool->processes()));
  if (m != Method::kPoolRun) return absl::InvalidArgumentError("not a method of a pool");
  MPROC_ASSIGN_OR_RETURN(auto a, (Args<std::vector<std::pair<uint64_t, Bytes>>>(r)));
  std::vector<std::pair<uint64_t, Bytes>>& tasks = std::get<0>(a);
  if (tasks.empty()) return Out(std::vector<TaskOutcome>());
  const uint64_t run_id = next_run_++;
  PoolRun& run = runs_[run_id];
  run.caller = ParkFor(c, call_id, -1);
  run.left = tasks.size();
  run.outcomes.resize(tasks.size());
  // Submitted as one batch: all of them or none.
  std::vector<pool_internal::PoolCore::Submission> batch;
  batch.reserve(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    pool_internal::PoolCore::Submission sub;
    sub.task.Append(tasks[i].second.data(), tasks[i].second.size());
    sub.done = [this, run_id, i](absl::Status st, std::span<const std::byte> out,
                                 std::vector<UniqueFd>) {
      TaskDoneNote note{run_id, i,
                        TaskOutcome(static_cast<uint8_t>(st.code()), std::string(st.message()),
                                    std::string(reinterpret_cast<const char*>(out.data()),
                                                out.size()))};
      MutexLock lock(&done_mu_);
      done_.push_back(std::move(note));
      const uint64_t one = 1;
      (void)::write(done_fd_.get(), &one, sizeof(one));
    };
    batch.push_back(std::move(sub));
  }
  absl::Status submitted = o.pool->SubmitMany(batch);
  if (!submitted.ok()) {
    runs_.erase(run_id);
    return submitted;
  }
  *parked = true;
  return EncodeBuffer();
}

void Server::FinishTasks() {
  uint64_t count = 0;
  (void)::read(done_fd_.get(), &count, sizeof(count));
  if (stop_token_.stop_requested()) stop_ = true;
  std::vector<TaskDoneNote> notes;
  {
    MutexLock lock(&done_mu_);
    notes.swap(done_);
  }
  for (TaskDoneNote& n : notes) {
    auto it = runs_.find(n.run);
    if (it == runs_.end()) continue;
    PoolRun& run = it->second;
    run.outcomes[n.index] = std::move(n.outcome);
    if (--run.left > 0) continue;
    EncodeBuffer b = Out(run.outcomes);
    Answer(run.caller, absl::OkStatus(), &b);  // a caller gone meanwhile is skipped
    runs_.erase(it);
  }
}

Parked Server::ParkFor(Conn& c, uint64_t call_id, int64_t timeout_ns) const {
  Parked p;
  p.fd = c.fd.get();
  p.serial = c.serial;
  p.call_id = call_id;
  p.deadline_ns = timeout_ns < 0 ? INT64_MAX : MonotonicNowNs() + timeout_ns;
  return p;
}

void Server::Answer(const Parked& p, const absl::Status& status, const EncodeBuffer* body) {
  auto it = conns_.find(p.fd);
  if (it == conns_.end() || it->second.serial != p.serial) return;  // its client is gone
  Reply(it->second, p.call_id, status, body);
  Flush(it->second);
}

void Server::PumpQueue(Object& o) {
  for (bool moved = true; moved;) {
    moved = false;
    while (!o.getters.empty() && !o.items.empty()) {
      EncodeBuffer b = Out(o.items.front());
      o.items.pop_front();
      Answer(o.getters.front(), absl::OkStatus(), &b);
      o.getters.pop_front();
      moved = true;
    }
    while (!o.putters.empty() && (o.maxsize == 0 || o.items.size() < o.maxsize)) {
      o.items.push_back(std::move(o.putters.front().item));
      if (o.joinable) ++o.unfinished;
      Answer(o.putters.front(), absl::OkStatus(), nullptr);
      o.putters.pop_front();
      moved = true;
    }
  }
}

void Server::GrantLock(Object& lock) {
  while (lock.owner_serial == 0 && !lock.lock_waiters.empty()) {
    Parked p = std::move(lock.lock_waiters.front());
    lock.lock_waiters.pop_front();
    if (conns_.count(p.fd) == 0 || conns_.at(p.fd).serial != p.serial) continue;
    lock.owner_serial = p.serial;
    lock.owner_tid = p.tid;
    if (p.reacquire) {  // a Condition waiter: its lock back, at its depth
      lock.depth = p.depth;
      EncodeBuffer b = Out(p.notified);
      Answer(p, absl::OkStatus(), &b);
    } else {
      lock.depth = 1;
      EncodeBuffer b = Out(std::make_tuple(true, lock.owner_died));
      lock.owner_died = false;
      Answer(p, absl::OkStatus(), &b);
    }
  }
}

void Server::PumpSemaphore(Object& o) {
  while (o.sem_value > 0 && !o.sem_waiters.empty()) {
    --o.sem_value;
    EncodeBuffer b = Out(true);
    Answer(o.sem_waiters.front(), absl::OkStatus(), &b);
    o.sem_waiters.pop_front();
  }
}

void Server::BreakBarrier(Object& o) {
  o.broken = true;
  o.arrived = 0;
  for (const Parked& p : o.barrier_waiters) {
    Answer(p, absl::FailedPreconditionError("BrokenBarrierError: the barrier is broken"), nullptr);
  }
  o.barrier_waiters.clear();
}

Result Server::CallBlocking(Conn& c, uint64_t id, Object& o, Method m, DecodeReader& r,
                            uint64_t call_id, bool* parked) {
  *parked = false;
  auto park = [&](std::deque<Parked>& q, Parked p) -> Result {
    q.push_back(std::move(p));
    waiting_objects_.insert(id);
    *parked = true;
    return EncodeBuffer();
  };
  switch (o.kind) {
    case Kind::kQueue:
      switch (m) {
        case Method::kQueuePut: {
          MPROC_ASSIGN_OR_RETURN(auto a, (Args<Bytes, int64_t>(r)));
          if (o.maxsize == 0 || o.items.size() < o.maxsize) {
            o.items.push_back(std::move(std::get<0>(a)));
            if (o.joinable) ++o.unfinished;
            PumpQueue(o);
            return EncodeBuffer();
          }
          if (std::get<1>(a) == 0) return absl::ResourceExhaustedError("queue is full");
          Parked p = ParkFor(c, call_id, std::get<1>(a));
          p.item = std::move(std::get<0>(a));
          return park(o.putters, std::move(p));
        }
        case Method::kQueueGet: {
          MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
          if (!o.items.empty()) {
            EncodeBuffer b = Out(o.items.front());
            o.items.pop_front();
            PumpQueue(o);
            return b;
          }
          if (std::get<0>(a) == 0) return absl::UnavailableError("queue is empty");
          return park(o.getters, ParkFor(c, call_id, std::get<0>(a)));
        }
        case Method::kQueueSize:
          return Out(static_cast<uint64_t>(o.items.size()));
        case Method::kQueueEmpty:
          return Out(o.items.empty());
        case Method::kQueueFull:
          return Out(o.maxsize > 0 && o.items.size() >= o.maxsize);
        case Method::kQueueTaskDone:
          if (!o.joinable) return absl::InvalidArgumentError("not a JoinableQueue");
          if (o.unfinished <= 0) {
            return absl::FailedPreconditionError("ValueError: task_done() called too many times");
          }
          if (--o.unfinished == 0) {
            for (const Parked& p : o.joiners) Answer(p, absl::OkStatus(), nullptr);
            o.joiners.clear();
          }
          return EncodeBuffer();
        case Method::kQueueJoin: {
          MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
          if (o.unfinished == 0) return EncodeBuffer();
          if (std::get<0>(a) == 0) return absl::DeadlineExceededError("Join timed out");
          return park(o.joiners, ParkFor(c, call_id, std::get<0>(a)));
        }
        default:
          break;
      }
      break;
    case Kind::kLock:
      switch (m) {
        case Method::kLockAcquire: {
          MPROC_ASSIGN_OR_RETURN(auto a, (Args<uint64_t, int64_t>(r)));
          const uint64_t tid = std::get<0>(a);
          if (o.owner_serial == 0) {
            o.owner_serial = c.serial;
            o.owner_tid = tid;
            o.depth = 1;
            const bool died = o.owner_died;
            o.owner_died = false;
            return Out(std::make_tuple(true, died));
          }
          if (o.recursive && o.owner_serial == c.serial && o.owner_tid == tid) {
            ++o.depth;
            return Out(std::make_tuple(true, false));
          }
          if (std::get<1>(a) == 0) return Out(std::make_tuple(false, false));
          Parked p = ParkFor(c, call_id, std::get<1>(a));
          p.tid = tid;
          return park(o.lock_waiters, std::move(p));
        }
        case Method::kLockRelease: {
          MPROC_ASSIGN_OR_RETURN(auto a, Args<uint64_t>(r));
          if (o.owner_serial == 0) {
            return absl::FailedPreconditionError("RuntimeError: release unlocked lock");
          }
          if (o.recursive) {
            if (o.owner_serial != c.serial || o.owner_tid != std::get<0>(a)) {
              return absl::FailedPreconditionError(
                  "RuntimeError: cannot release un-acquired lock (another thread holds it)");
            }
            if (--o.depth > 0) return EncodeBuffer();
          }
          o.owner_serial = 0;
          o.depth = 0;
          GrantLock(o);
          return EncodeBuffer();
        }
        case Method::kLockLocked:
          return Out(o.owner_serial != 0);
        default:
          break;
      }
      break;
    case Kind::kSemaphore:
      switch (m) {
        case Method::kSemAcquire: {
          MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
          if (o.sem_value > 0) {
            --o.sem_value;
            return Out(true);
          }
          if (std::get<0>(a) == 0) return Out(false);
          return park(o.sem_waiters, ParkFor(c, call_id, std::get<0>(a)));
        }
        case Method::kSemRelease: {
          MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
          const int64_t n = std::get<0>(a);
          if (n < 1) return absl::InvalidArgumentError("ValueError: n must be one or more");
          if (o.bounded && o.sem_value + n > o.sem_initial) {
            return absl::FailedPreconditionError("ValueError: Semaphore released too many times");
          }
          o.sem_value += n;
          PumpSemaphore(o);
          return EncodeBuffer();
        }
        case Method::kSemValue:
          return Out(o.sem_value);
        default:
          break;
      }
      break;
    case Kind::kEvent:
      switch (m) {
        case Method::kEventSet: {
          o.flag = true;
          EncodeBuffer yes = Out(true);
          for (const Parked& p : o.event_waiters) Answer(p, absl::OkStatus(), &yes);
          o.event_waiters.clear();
          return EncodeBuffer();
        }
        case Method::kEventClear:
          o.flag = false;
          return EncodeBuffer();
        case Method::kEventIsSet:
          return Out(o.flag);
        case Method::kEventWait: {
          MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
          if (o.flag) return Out(true);
          if (std::get<0>(a) == 0) return Out(false);
          return park(o.event_waiters, ParkFor(c, call_id, std::get<0>(a)));
        }
        default:
          break;
      }
      break;
    case Kind::kCondition: {
      auto lock_it = objects_.find(o.cond_lock);
      if (lock_it == objects_.end()) return absl::InternalError("the condition's lock is gone");
      Object& lock = lock_it->second;
      switch (m) {
        case Method::kCondWait: {
          MPROC_ASSIGN_OR_RETURN(auto a, (Args<uint64_t, int64_t>(r)));
          if (lock.owner_serial != c.serial || lock.owner_tid != std::get<0>(a)) {
            return absl::FailedPreconditionError(
                "RuntimeError: cannot wait on un-acquired lock");
          }
          // Releases the lock entirely (an RLock at any depth), waits for a notify, then takes
          // it back at the same depth before answering.
          Parked p = ParkFor(c, call_id, std::get<1>(a));
          p.tid = std::get<0>(a);
          p.depth = lock.depth;
          lock.owner_serial = 0;
          lock.depth = 0;
          o.cond_waiters.push_back(std::move(p));
          waiting_objects_.insert(id);
          waiting_objects_.insert(o.cond_lock);
          GrantLock(lock);
          *parked = true;
          return EncodeBuffer();
        }
        case Method::kCondNotify: {
          MPROC_ASSIGN_OR_RETURN(auto a, (Args<uint64_t, int64_t>(r)));
          if (lock.owner_serial != c.serial || lock.owner_tid != std::get<0>(a)) {
            return absl::FailedPreconditionError(
                "RuntimeError: cannot notify on un-acquired lock");
          }
          int64_t n = std::get<1>(a) < 0 ? INT64_MAX : std::get<1>(a);
          while (n-- > 0 && !o.cond_waiters.empty()) {
            Parked p = std::move(o.cond_waiters.front());
            o.cond_waiters.pop_front();
            p.reacquire = true;
            p.notified = true;
            p.deadline_ns = INT64_MAX;  // taking the lock back has no timeout (Python's)
            lock.lock_waiters.push_back(std::move(p));
          }
          if (!lock.lock_waiters.empty()) waiting_objects_.insert(o.cond_lock);
          return EncodeBuffer();  // the notifier still holds the lock: they run after its release
        }
        default:
          break;
      }
      break;
    }
    case Kind::kBarrier:
      switch (m) {
        case Method::kBarrierWait: {
          MPROC_ASSIGN_OR_RETURN(auto a, Args<int64_t>(r));
          if (o.broken) {
            return absl::FailedPreconditionError("BrokenBarrierError: the barrier is broken");
          }
          const int64_t index = o.arrived++;
          if (o.arrived == o.parties) {
            for (const Parked& p : o.barrier_waiters) {
              EncodeBuffer b = Out(p.depth);
              Answer(p, absl::OkStatus(), &b);
            }
            o.barrier_waiters.clear();
            o.arrived = 0;
            ++o.generation;
            return Out(index);
          }
          Parked p = ParkFor(c, call_id, std::get<0>(a));
          p.depth = index;
          p.generation = o.generation;
          return park(o.barrier_waiters, std::move(p));
        }
        case Method::kBarrierAbort:
          BreakBarrier(o);
          return EncodeBuffer();
        case Method::kBarrierReset:
          if (!o.barrier_waiters.empty()) BreakBarrier(o);
          o.broken = false;
          o.arrived = 0;
          ++o.generation;
          return EncodeBuffer();
        case Method::kBarrierState:
          return Out(std::make_tuple(o.parties, o.arrived, o.broken));
        default:
          break;
      }
      break;
    default:
      break;
  }
  return absl::InvalidArgumentError("not a method of this object");
}

void Server::DropConnection(uint64_t serial) {
  for (auto& [id, o] : objects_) {
    if (o.kind == Kind::kLock && o.owner_serial == serial) {
      // Died holding it: free it, and tell the next acquirer (beyond CPython, whose server
      // would keep it locked forever).
      o.owner_serial = 0;
      o.depth = 0;
      o.owner_died = true;
    }
  }
  std::vector<uint64_t> ids(waiting_objects_.begin(), waiting_objects_.end());
  for (uint64_t id : ids) {
    auto it = objects_.find(id);
    if (it == objects_.end()) continue;
    Object& o = it->second;
    auto gone = [serial](const Parked& p) { return p.serial == serial; };
    const size_t barrier_before = o.barrier_waiters.size();
    for (std::deque<Parked>* q : {&o.getters, &o.putters, &o.joiners, &o.lock_waiters,
                                  &o.sem_waiters, &o.event_waiters, &o.cond_waiters,
                                  &o.barrier_waiters}) {
      std::erase_if(*q, gone);
    }
    // A party gone from a barrier it waited at: the others would wait for it forever.
    if (o.barrier_waiters.size() != barrier_before) BreakBarrier(o);
    if (!o.embedded.empty()) Rescan(id);  // a parked Put's item may have held a proxy
  }
  for (auto& [id, o] : objects_) {
    if (o.kind == Kind::kLock && o.owner_serial == 0) GrantLock(o);
  }
}

void Server::ExpireParked(int64_t now) {
  std::vector<uint64_t> ids(waiting_objects_.begin(), waiting_objects_.end());
  for (uint64_t id : ids) {
    auto it = objects_.find(id);
    if (it == objects_.end()) {
      waiting_objects_.erase(id);
      continue;
    }
    Object& o = it->second;
    auto expire = [&](std::deque<Parked>& q, const std::function<void(const Parked&)>& on) {
      for (size_t i = 0; i < q.size();) {
        if (q[i].deadline_ns > now) {
          ++i;
          continue;
        }
        Parked p = std::move(q[i]);
        q.erase(q.begin() + static_cast<ptrdiff_t>(i));
        on(p);
      }
    };
    expire(o.getters, [&](const Parked& p) {
      Answer(p, absl::DeadlineExceededError("queue is empty: Get timed out"), nullptr);
    });
    expire(o.putters, [&](const Parked& p) {
      Answer(p, absl::DeadlineExceededError("queue is full: Put timed out"), nullptr);
    });
    expire(o.joiners, [&](const Parked& p) {
      Answer(p, absl::DeadlineExceededError("Join timed out"), nullptr);
    });
    expire(o.lock_waiters, [&](const Parked& p) {
      EncodeBuffer b = Out(std::make_tuple(false, false));
      Answer(p, absl::OkStatus(), &b);
    });
    expire(o.sem_waiters, [&](const Parked& p) {
      EncodeBuffer b = Out(false);
      Answer(p, absl::OkStatus(), &b);
    });
    expire(o.event_waiters, [&](const Parked& p) {
      EncodeBuffer b = Out(false);
      Answer(p, absl::OkStatus(), &b);
    });
    if (o.kind == Kind::kCondition) {
      // Timed out: it takes its lock back all the same, then answers false.
      auto lock_it = objects_.find(o.cond_lock);
      std::vector<Parked> late;
      expire(o.cond_waiters, [&](const Parked& p) { late.push_back(p); });
      if (lock_it != objects_.end()) {
        for (Parked& p : late) {
          p.reacquire = true;
          p.notified = false;
          p.deadline_ns = INT64_MAX;
          lock_it->second.lock_waiters.push_back(std::move(p));
        }
        waiting_objects_.insert(o.cond_lock);
        GrantLock(lock_it->second);
      }
    }
    bool barrier_timeout = false;
    for (const Parked& p : o.barrier_waiters) barrier_timeout |= p.deadline_ns <= now;
    if (barrier_timeout) BreakBarrier(o);  // one party's timeout breaks it for all (Python's)
    if (!o.HasWaiters()) waiting_objects_.erase(id);
    if (!o.embedded.empty()) Rescan(id);  // a timed-out Put's item may have held a proxy
  }
}

bool Server::Handle(Conn& c, std::span<const std::byte> msg) {
  served_this_turn_ = true;
  DecodeReader r(msg);
  uint64_t call_id = 0, object = 0;
  uint8_t op_byte = 0;
  if (!Codec<uint64_t>::Decode(r, call_id) || !Codec<uint8_t>::Decode(r, op_byte) ||
      !Codec<uint64_t>::Decode(r, object)) {
    return false;  // not a request: the stream cannot be trusted any further
  }
  const Op op = static_cast<Op>(op_byte);
  switch (op) {
    case Op::kHello: {
      EncodeBuffer b;
      Encode(nonce_, b);
      Encode(static_cast<int32_t>(::getpid()), b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
    case Op::kCreate: {
      uint8_t kind = 0;
      uint64_t fingerprint = 0;
      std::string initial;
      if (!Codec<uint8_t>::Decode(r, kind) || !Codec<uint64_t>::Decode(r, fingerprint) ||
          !Codec<std::string>::Decode(r, initial) || kind < 1 || kind > kLastKind) {
        Reply(c, call_id, absl::InvalidArgumentError("malformed create"), nullptr);
        return true;
      }
      Object o;
      o.kind = static_cast<Kind>(kind);
      o.fingerprint = fingerprint;
      absl::Status made = absl::OkStatus();
      switch (o.kind) {
        case Kind::kValue:
          o.value = std::move(initial);
          break;
        case Kind::kDict: {
          if (initial.empty()) break;
          absl::StatusOr<std::vector<std::pair<Bytes, Bytes>>> a =
              Decode<std::vector<std::pair<Bytes, Bytes>>>(AsBytes(initial));
          if (!a.ok()) { made = a.status(); break; }
          for (auto& [k, v] : *a) o.dict.Set(k, std::move(v));
          break;
        }
        case Kind::kList:
        case Kind::kArray:
        case Kind::kSet: {
          if (initial.empty()) break;
          absl::StatusOr<std::vector<Bytes>> a = Decode<std::vector<Bytes>>(AsBytes(initial));
          if (!a.ok()) { made = a.status(); break; }
          if (o.kind == Kind::kSet) {
            o.set.insert(std::make_move_iterator(a->begin()), std::make_move_iterator(a->end()));
          } else {
            o.list = *std::move(a);
          }
          break;
        }
        case Kind::kQueue: {
          absl::StatusOr<std::tuple<uint64_t, bool>> a =
              Decode<std::tuple<uint64_t, bool>>(AsBytes(initial));
          if (!a.ok()) { made = a.status(); break; }
          std::tie(o.maxsize, o.joinable) = *a;
          break;
        }
        case Kind::kLock: {
          absl::StatusOr<bool> a = Decode<bool>(AsBytes(initial));
          if (!a.ok()) { made = a.status(); break; }
          o.recursive = *a;
          break;
        }
        case Kind::kSemaphore: {
          absl::StatusOr<std::tuple<int64_t, bool>> a =
              Decode<std::tuple<int64_t, bool>>(AsBytes(initial));
          if (!a.ok()) { made = a.status(); break; }
          std::tie(o.sem_value, o.bounded) = *a;
          o.sem_initial = o.sem_value;
          if (o.sem_value < 0) made = absl::InvalidArgumentError("semaphore initial value < 0");
          break;
        }
        case Kind::kCondition: {
          absl::StatusOr<uint64_t> a = Decode<uint64_t>(AsBytes(initial));
          if (!a.ok()) { made = a.status(); break; }
          auto lock = objects_.find(*a);
          if (lock == objects_.end() || lock->second.kind != Kind::kLock || c.refs.count(*a) == 0) {
            made = absl::InvalidArgumentError("a Condition needs a Lock or RLock of this client's");
            break;
          }
          o.cond_lock = *a;
          lock->second.refs += 1;  // the Condition's own hold on its lock
          break;
        }
        case Kind::kObject: {
          DecodeReader init(AsBytes(initial));
          ObjectFactory factory = nullptr;
          if (!Codec<ObjectFactory>::Decode(init, factory) || factory == nullptr) {
            made = init.ok() ? absl::InvalidArgumentError("no factory") : init.status();
            break;
          }
          std::string error;
          o.user = factory(init, &error);
          if (o.user == nullptr) made = absl::InvalidArgumentError(error);
          break;
        }
        case Kind::kNamedObject: {
          DecodeReader init(AsBytes(initial));
          std::string name;
          if (!Codec<std::string>::Decode(init, name)) { made = init.status(); break; }
          ObjectFactory factory = nullptr;
          {
            MutexLock lock(&NamedTypesMutex());
            auto t = NamedTypes().find(name);
            if (t != NamedTypes().end()) factory = t->second.factory;
          }
          if (factory == nullptr) {
            made = absl::NotFoundError(absl::StrCat("no type \"", name,
                                                    "\" is registered in the manager's server"));
            break;
          }
          if (o.fingerprint != NamedFingerprint(name)) {
            made = absl::InvalidArgumentError("a malformed create of a named object");
            break;
          }
          std::string error;
          o.user = factory(init, &error);
          if (o.user == nullptr) made = absl::InvalidArgumentError(error);
          o.kind = Kind::kObject;
          o.type_name = std::move(name);
          break;
        }
        case Kind::kPool: {
          absl::StatusOr<std::tuple<int64_t, std::optional<StartMethod>>> a =
              Decode<std::tuple<int64_t, std::optional<StartMethod>>>(AsBytes(initial));
          if (!a.ok()) { made = a.status(); break; }
          pool_internal::CoreOptions options;
          options.processes = static_cast<int>(std::get<0>(*a));
          options.start_method = std::get<1>(*a);
          absl::StatusOr<pool_internal::CorePtr> pool =
              pool_internal::PoolCore::Create(std::move(options));
          if (!pool.ok()) { made = pool.status(); break; }
          o.pool = *std::move(pool);
          break;
        }
        case Kind::kBarrier: {
          absl::StatusOr<int64_t> a = Decode<int64_t>(AsBytes(initial));
          if (!a.ok()) { made = a.status(); break; }
          o.parties = *a;
          if (o.parties < 1) made = absl::InvalidArgumentError("a Barrier needs at least 1 party");
          break;
        }
        default:
          break;
      }
      if (!made.ok()) {
        // The cause's code (NOT_FOUND for an unknown named type), the message prefixed.
        Reply(c, call_id, absl::Status(made.code(), absl::StrCat("create: ", made.message())),
              nullptr);
        return true;
      }
      const uint64_t id = next_object_++;
      objects_[id] = std::move(o);
      Ref(c, id, 1);
      if (HasStamp(initial)) Rescan(id);  // initial contents holding proxies
      EncodeBuffer b;
      Encode(id, b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
    case Op::kCall: {
      uint16_t method = 0;
      if (!Codec<uint16_t>::Decode(r, method)) return false;
      auto it = objects_.find(object);
      if (it == objects_.end() || c.refs.count(object) == 0) {
        Reply(c, call_id,
              absl::FailedPreconditionError("the proxy's object is not held by this client"),
              nullptr);
        return true;
      }
      Object& o = it->second;
      // A call that keeps a stamp, or on an object that keeps some, may change what the
      // object's values reference: recount after it.
      const bool rescan = !o.embedded.empty() ||
                          HasStamp(std::string_view(reinterpret_cast<const char*>(msg.data()) +
                                                        r.offset(),
                                                    r.remaining()));
      Result res = absl::InvalidArgumentError("unknown object kind");
      const Method m = static_cast<Method>(method);
      bool parked = false;
      switch (o.kind) {
        case Kind::kDict: res = CallDict(o.dict, m, r); break;
        case Kind::kList: res = CallList(o.list, m, r); break;
        case Kind::kArray: res = CallList(o.list, m, r, /*fixed_size=*/true); break;
        case Kind::kSet: res = CallSet(o.set, m, r); break;
        case Kind::kValue: res = CallValue(o.value, m, r); break;
        case Kind::kNamespace: res = CallNamespace(o.ns, m, r); break;
        case Kind::kObject: res = CallObject(c, o, m, r); break;
        case Kind::kPool: res = CallPool(c, o, m, r, call_id, &parked); break;
        default: res = CallBlocking(c, object, o, m, r, call_id, &parked); break;
      }
      if (!parked) {  // else answered later
        if (res.ok()) {
          Reply(c, call_id, absl::OkStatus(), &*res);  // tickets for the proxies it carries
        } else {
          Reply(c, call_id, res.status(), nullptr);
        }
      }
      if (rescan) Rescan(object);
      return true;
    }
    case Op::kDecref: {
      auto it = c.refs.find(object);
      if (it != c.refs.end()) {
        if (--it->second <= 0) c.refs.erase(it);
        Unref(object, 1);
      }
      return true;
    }
    case Op::kTicket: {
      uint64_t ticket = 0;
      if (!Codec<uint64_t>::Decode(r, ticket)) return false;
      if (objects_.count(object) == 0 || c.refs.count(object) == 0) return true;
      if (tickets_.emplace(ticket, Ticket{object, MonotonicNowNs() + kTicketNs}).second) {
        objects_[object].refs += 1;  // the ticket's own reference
      }
      // A claim that came first is served now.
      for (size_t i = 0; i < parked_.size(); ++i) {
        if (parked_[i].ticket != ticket) continue;
        ParkedClaim p = parked_[i];
        parked_.erase(parked_.begin() + static_cast<ptrdiff_t>(i));
        auto waiting = conns_.find(p.conn);
        if (waiting == conns_.end()) break;
        bool parked = false;
        absl::Status s =
            Claim(waiting->second, p.ticket, p.fingerprint, p.kind, &parked, p.call_id);
        if (!parked) {
          Reply(waiting->second, p.call_id, s, nullptr);
          Flush(waiting->second);
        }
        break;
      }
      return true;
    }
    case Op::kClaim: {
      uint64_t ticket = 0, fingerprint = 0;
      if (!Codec<uint64_t>::Decode(r, ticket) || !Codec<uint64_t>::Decode(r, fingerprint)) {
        return false;
      }
      uint8_t kind = 0;  // sent by clients since the kind check; absent from older ones
      if (r.remaining() > 0 && !Codec<uint8_t>::Decode(r, kind)) return false;
      bool parked = false;
      absl::Status s = Claim(c, ticket, fingerprint, kind, &parked, call_id);
      if (!parked) Reply(c, call_id, s, nullptr);
      return true;
    }
    case Op::kIncref: {
      uint64_t fingerprint = 0;
      if (!Codec<uint64_t>::Decode(r, fingerprint)) return false;
      auto it = objects_.find(object);
      if (it == objects_.end()) {
        Reply(c, call_id,
              absl::NotFoundError("the proxy's object no longer exists (every process that "
                                  "held it dropped it)"),
              nullptr);
      } else if (it->second.fingerprint != fingerprint) {
        Reply(c, call_id, absl::InvalidArgumentError("the proxy's element types differ"), nullptr);
      } else {
        Ref(c, object, 1);
        Reply(c, call_id, absl::OkStatus(), nullptr);
      }
      return true;
    }
    case Op::kForkLease: {
      uint64_t token = 0;
      if (!Codec<uint64_t>::Decode(r, token)) return false;
      ForkLease lease{{}, MonotonicNowNs() + kTicketNs};
      for (const auto& [id, n] : c.refs) {
        lease.objects.push_back(id);
        objects_[id].refs += 1;  // the lease's own reference, until the child claims it
      }
      if (!fork_leases_.emplace(token, std::move(lease)).second) {
        return false;  // a token twice: not from an honest client
      }
      return true;
    }
    case Op::kClaimFork: {
      uint64_t token = 0;
      if (!Codec<uint64_t>::Decode(r, token)) return false;
      auto it = fork_leases_.find(token);
      if (it == fork_leases_.end()) {
        Reply(c, call_id, absl::NotFoundError("no such fork lease (it expired after 60 s)"),
              nullptr);
        return true;
      }
      std::vector<uint64_t> claimed;
      for (uint64_t id : it->second.objects) {
        if (objects_.count(id) == 0) continue;
        c.refs[id] += 1;  // the lease's reference becomes this connection's
        claimed.push_back(id);
      }
      fork_leases_.erase(it);
      EncodeBuffer b;
      Encode(claimed, b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
    case Op::kCount: {
      EncodeBuffer b;
      Encode(static_cast<uint64_t>(objects_.size()), b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
    case Op::kShutdown:
      Reply(c, call_id, absl::OkStatus(), nullptr);
      stop_ = true;
      return true;
    case Op::kShmCreate: {
      uint64_t size = 0;
      bool eager = false;
      if (!Codec<uint64_t>::Decode(r, size) || !Codec<bool>::Decode(r, eager)) {
        Reply(c, call_id, absl::InvalidArgumentError("malformed shared memory request"), nullptr);
        return true;
      }
      SharedMemoryOptions options;
      options.reserve = eager ? Segment::Reserve::kEager : Segment::Reserve::kLazy;
      absl::StatusOr<SharedMemory> made = SharedMemory::Create(size, "", options);
      if (!made.ok()) {
        Reply(c, call_id, made.status(), nullptr);
        return true;
      }
      // The server keeps no mapping, only its creator's hold (Close keeps that): the name
      // stays until Shutdown unlinks it, and if the server dies instead, the segment is
      // reclaimed once nobody has it attached (shm/shared_memory.h).
      const std::string name = made->name();
      made->Close();
      segments_.push_back(*std::move(made));
      EncodeBuffer b;
      Encode(name, b);
      Reply(c, call_id, absl::OkStatus(), &b);
      return true;
    }
  }
  Reply(c, call_id, absl::InvalidArgumentError("unknown request"), nullptr);
  return true;
}

bool Server::Dispatch(Conn& c) {
  size_t pos = 0;
  bool ok = true;
  while (ok) {
    const FrameAt f = PeekFrame(std::string_view(c.in).substr(pos));
    if (f.state == FrameAt::kTooLong) {
      ok = false;
      break;
    }
    if (f.state == FrameAt::kNeedMore) break;
    ok = Handle(c, std::span<const std::byte>(
                       reinterpret_cast<const std::byte*>(c.in.data() + pos + 4), f.len));
    pos += 4 + f.len;
  }
  c.in.erase(0, pos);
  return ok;
}

void Server::OnReadable(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  if (c.handshake != nullptr) {
    absl::StatusOr<bool> done = c.handshake->OnReadable();
    if (!done.ok()) return Close(fd);
    if (!*done) return;
    c.handshake.reset();
  }
  char buf[64 << 10];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return Close(fd);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return Close(fd);
    }
    c.in.append(buf, static_cast<size_t>(n));
    if (!Dispatch(c)) return Close(fd);
    if (c.in.size() > kMaxMessage + 4) return Close(fd);
    if (stop_) break;
    // A short read took all there was: the epoll is level-triggered, so more arriving now is
    // reported at the next wait (one recv per request, not a second one to see EAGAIN).
    if (static_cast<size_t>(n) < sizeof(buf)) break;
  }
  Flush(c);
  // A client that never reads its replies does not make the server hold them forever.
  if (Unsent(c) > kMaxMessage) Close(fd);
}

bool Server::Consume(int fd, Conn& c) {
  if (!Dispatch(c) || c.in.size() > kMaxMessage + 4) {
    Close(fd);
    return false;
  }
  Flush(c);
  if (Unsent(c) > kMaxMessage) {
    Close(fd);
    return false;
  }
  return true;
}

void Server::Expire(int64_t now) {
  ExpireParked(now);
  for (auto it = tickets_.begin(); it != tickets_.end();) {
    if (it->second.expires_ns > now) {
      ++it;
      continue;
    }
    const uint64_t id = it->second.object;
    it = tickets_.erase(it);
    Unref(id, 1);
  }
  for (auto it = fork_leases_.begin(); it != fork_leases_.end();) {
    if (it->second.expires_ns > now) {
      ++it;
      continue;
    }
    std::vector<uint64_t> ids = std::move(it->second.objects);
    it = fork_leases_.erase(it);
    for (uint64_t id : ids) Unref(id, 1);
  }
  for (size_t i = parked_.size(); i-- > 0;) {
    if (parked_[i].deadline_ns > now) continue;
    ParkedClaim p = parked_[i];
    parked_.erase(parked_.begin() + static_cast<ptrdiff_t>(i));
    auto c = conns_.find(p.conn);
    if (c == conns_.end()) continue;
    Reply(c->second, p.call_id,
          absl::NotFoundError("the proxy's reference was never handed over (its sender died, "
                              "or took longer than 60 s)"),
          nullptr);
    Flush(c->second);
  }
  std::vector<int> late;
  for (const auto& [fd, c] : conns_) {
    if (c.handshake != nullptr && c.handshake_deadline_ns <= now) late.push_back(fd);
  }
  for (int fd : late) Close(fd);
}

int64_t Server::NextWakeNs() const {
  int64_t wake = INT64_MAX;
  for (const auto& [t, ticket] : tickets_) wake = std::min(wake, ticket.expires_ns);
  for (const auto& [t, lease] : fork_leases_) wake = std::min(wake, lease.expires_ns);
  for (uint64_t id : waiting_objects_) {
    auto it = objects_.find(id);
    if (it == objects_.end()) continue;
    const Object& o = it->second;
    for (const std::deque<Parked>* q : {&o.getters, &o.putters, &o.joiners, &o.lock_waiters,
                                        &o.sem_waiters, &o.event_waiters, &o.cond_waiters,
                                        &o.barrier_waiters}) {
      for (const Parked& p : *q) wake = std::min(wake, p.deadline_ns);
    }
  }
  for (const ParkedClaim& p : parked_) wake = std::min(wake, p.deadline_ns);
  for (const auto& [fd, c] : conns_) {
    if (c.handshake != nullptr) wake = std::min(wake, c.handshake_deadline_ns);
  }
  return wake;
}

int Server::Run() {
  // Until Run returns: a thread that served (Manager::Serve) is a client again afterwards.
  MarkManagerServerThread(true);
  struct Unmark {
    ~Unmark() { MarkManagerServerThread(false); }
  } unmark;
  done_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!done_fd_.ok() || SetNonBlocking(listener_.get(), true) < 0) return 1;
  // Runs at once when the stop was requested before: the loop then ends at its first turn.
  if (stop_token_.stop_possible()) on_stop_.emplace(stop_token_, [this] { RingDone(); });
  // Auto: io_uring (it measured faster), unless the I/O mode was chosen plain.
  const bool want_uring = config_.backend < 0
                              ? BestIoMode() != IoMode::kPlain &&
                                    !(IoModeChosen() && ActiveIoMode() == IoMode::kPlain)
                              : config_.backend == 1;
  if (want_uring && UringInit()) return RunUring();
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.ok()) return 1;
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.fd = listener_.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.get(), &ev) != 0) return 1;
  ev.data.fd = done_fd_.get();
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, done_fd_.get(), &ev) != 0) return 1;
  epoll_event events[64];
  while (!stop_) {
    const int64_t wake = NextWakeNs();
    // A client's next request usually follows its reply within microseconds: look for it
    // (yielding between looks) before sleeping (SpinWindow).
    int n = 0;
    int64_t until = 0;
    if (SpinWindow(wake, &until)) {
      LookUntil(until, [&] {
        n = ::epoll_wait(epoll_.get(), events, 64, 0);
        return n != 0;
      });
    }
    if (n == 0) {
      const int64_t now = MonotonicNowNs();
      const int timeout_ms = wake == INT64_MAX
                                 ? -1
                                 : static_cast<int>(std::max<int64_t>(0, wake - now) / 1'000'000 + 1);
      n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms);
    }
    if (n < 0 && errno != EINTR) return 1;
    for (int i = 0; i < n && !stop_; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listener_.get()) {
        Accept();
        continue;
      }
      if (fd == done_fd_.get()) {
        FinishTasks();
        continue;
      }
      auto it = conns_.find(fd);
      if (it == conns_.end()) continue;
      if (events[i].events & EPOLLOUT) Flush(it->second);
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) OnReadable(fd);
    }
    Expire(MonotonicNowNs());
  }
  return Finish();
}

int Server::Finish() {
  // Shutdown: the shared memory segments made here lose their names (views stay valid), the
  // replies written so far go out (best effort, briefly), then the server ends.
  for (SharedMemory& m : segments_) (void)m.Unlink();
  segments_.clear();
  objects_.clear();  // pools end here, while what their callbacks use still exists
  for (auto& [fd, c] : conns_) {
    if (!c.out.empty()) {
      (void)SetNonBlocking(fd, false);
      const std::string_view rest(c.out.data() + c.out_done, c.out.size() - c.out_done);
      (void)WriteAll(fd, rest.data(), rest.size(), Deadline::After(absl::Seconds(1)),
                     "manager reply");
    }
  }
  if (uring_) {
    io_uring_queue_exit(&ring_);  // cancels what is left in flight
    if (buf_ring_ != nullptr) ::munmap(buf_ring_, buf_ring_bytes_);
  }
  return 0;
}

// ---- The io_uring backend ----

namespace {
enum UringOp : uint64_t { kOpAccept = 1, kOpDone, kOpPoll, kOpRecv, kOpSend };
constexpr int kBufGroup = 0;
constexpr unsigned kBufCount = 256;        // provided receive buffers
constexpr size_t kBufSize = 16 << 10;      // ...of 16 KiB each
uint64_t Tag(uint64_t serial, UringOp op) { return (serial << 3) | op; }
}  // namespace

bool Server::UringInit() {
  io_uring_params p = {};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(512, &ring_, &p) < 0) {
    p = {};
    if (io_uring_queue_init_params(512, &ring_, &p) < 0) return false;
  }
  buf_ring_bytes_ = (kBufCount * sizeof(io_uring_buf) + 4095) & ~size_t{4095};
  void* mem = ::mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  io_uring_buf_reg reg = {};
  if (mem != MAP_FAILED) {
    reg.ring_addr = reinterpret_cast<uint64_t>(mem);
    reg.ring_entries = kBufCount;
    reg.bgid = kBufGroup;
  }
  if (mem == MAP_FAILED || io_uring_register_buf_ring(&ring_, &reg, 0) != 0) {
    // A kernel without provided buffer rings (before 5.19): the epoll backend serves.
    if (mem != MAP_FAILED) ::munmap(mem, buf_ring_bytes_);
    io_uring_queue_exit(&ring_);
    return false;
  }
  buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
  bufs_ = std::make_unique<char[]>(kBufCount * kBufSize);
  io_uring_buf_ring_init(buf_ring_);
  const int mask = io_uring_buf_ring_mask(kBufCount);
  for (unsigned i = 0; i < kBufCount; ++i) {
    io_uring_buf_ring_add(buf_ring_, bufs_.get() + i * kBufSize, kBufSize, static_cast<unsigned short>(i), mask,
                          static_cast<int>(i));
  }
  io_uring_buf_ring_advance(buf_ring_, kBufCount);
  if (!ProbeMultishotRecv()) {  // buffer rings (5.19) without multishot receive (6.0)
    io_uring_queue_exit(&ring_);
    ::munmap(buf_ring_, buf_ring_bytes_);
    buf_ring_ = nullptr;
    return false;
  }
  uring_ = true;
  return true;
}

// One multishot receive on a socketpair, end to end: a byte arrives in a provided buffer with
// more to come, and shutdown ends it. Any other answer means this kernel cannot run the loop.
bool Server::ProbeMultishotRecv() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
  UniqueFd a(sv[0]), b(sv[1]);
  if (::write(b.get(), "x", 1) != 1) return false;
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_recv_multishot(sqe, a.get(), nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufGroup;
  io_uring_sqe_set_data64(sqe, 0);
  bool ok = false, ended = false;
  for (int round = 0; round < 2 && !ended; ++round) {
    if (round == 1) ::shutdown(a.get(), SHUT_RDWR);
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts = {1, 0};
    if (io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr) < 0 || cqe == nullptr) break;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      RecycleBuffer(*cqe);
      if (round == 0) ok = cqe->res == 1 && (cqe->flags & IORING_CQE_F_MORE) != 0;
      if ((cqe->flags & IORING_CQE_F_MORE) == 0) ended = true;
    }
    io_uring_cq_advance(&ring_, seen);
  }
  return ok && ended;
}

const char* Server::BufferOf(const io_uring_cqe& cqe) const {
  return bufs_.get() + size_t{cqe.flags >> IORING_CQE_BUFFER_SHIFT} * kBufSize;
}

void Server::RecycleBuffer(const io_uring_cqe& cqe) {
  if ((cqe.flags & IORING_CQE_F_BUFFER) == 0) return;
  const auto bid = static_cast<unsigned short>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
  io_uring_buf_ring_add(buf_ring_, bufs_.get() + size_t{bid} * kBufSize, kBufSize, bid,
                        io_uring_buf_ring_mask(kBufCount), 0);
  io_uring_buf_ring_advance(buf_ring_, 1);
}

io_uring_sqe* Server::Sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {  // the submission queue is full: hand it to the kernel first
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void Server::ArmAccept() {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_multishot_accept(sqe, listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  io_uring_sqe_set_data64(sqe, Tag(0, kOpAccept));
}

void Server::ArmDonePoll() {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_poll_add(sqe, done_fd_.get(), POLLIN);
  io_uring_sqe_set_data64(sqe, Tag(0, kOpDone));
}

void Server::ArmHandshakePoll(const Conn& c) {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_poll_add(sqe, c.fd.get(), POLLIN | POLLRDHUP);
  io_uring_sqe_set_data64(sqe, Tag(c.serial, kOpPoll));
}

void Server::ArmRecv(const Conn& c) {
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_recv_multishot(sqe, c.fd.get(), nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufGroup;
  io_uring_sqe_set_data64(sqe, Tag(c.serial, kOpRecv));
}

void Server::SendNext(Conn& c) {
  if (c.send_in_flight) return;  // its completion sends what queued up meanwhile
  if (c.out_done == c.out.size()) return;
  if (c.out_done == 0) {
    c.sending = std::move(c.out);
  } else {
    c.sending.assign(c.out, c.out_done, std::string::npos);
  }
  c.out.clear();
  c.out_done = 0;
  c.sending_done = 0;
  c.send_in_flight = true;
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_send(sqe, c.fd.get(), c.sending.data(), c.sending.size(), MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, Tag(c.serial, kOpSend));
}

Server::Conn* Server::BySerial(uint64_t serial) {
  auto f = fd_of_serial_.find(serial);
  if (f == fd_of_serial_.end()) return nullptr;
  auto it = conns_.find(f->second);
  return it == conns_.end() || it->second.serial != serial ? nullptr : &it->second;
}

bool Server::HandshakeStep(int fd, Conn& c) {
  absl::StatusOr<bool> done = c.handshake->OnReadable();
  if (!done.ok()) {
    Close(fd);
    return false;
  }
  if (!*done) {
    ArmHandshakePoll(c);
    return true;
  }
  c.handshake.reset();
  ArmRecv(c);
  return true;
}

void Server::OnUringCqe(const io_uring_cqe& cqe) {
  const uint64_t data = io_uring_cqe_get_data64(&cqe);
  const auto op = static_cast<UringOp>(data & 7);
  const uint64_t serial = data >> 3;
  const bool more = (cqe.flags & IORING_CQE_F_MORE) != 0;
  switch (op) {
    case kOpAccept:
      if (cqe.res >= 0) AddConn(UniqueFd(cqe.res));
      if (!more) ArmAccept();
      return;
    case kOpDone:
      FinishTasks();
      ArmDonePoll();
      return;
    case kOpPoll: {
      Conn* c = BySerial(serial);
      if (c != nullptr) HandshakeStep(c->fd.get(), *c);
      return;
    }
    case kOpRecv: {
      Conn* c = BySerial(serial);
      if (c != nullptr && cqe.res > 0 && (cqe.flags & IORING_CQE_F_BUFFER) != 0) {
        c->in.append(BufferOf(cqe), static_cast<size_t>(cqe.res));
      }
      RecycleBuffer(cqe);  // the buffer goes straight back to the ring
      if (c == nullptr) return;
      const int fd = c->fd.get();
      if (cqe.res == 0 || (cqe.res < 0 && cqe.res != -ENOBUFS && cqe.res != -EAGAIN &&
                           cqe.res != -EINTR)) {
        return Close(fd);  // end of stream, or the connection failed
      }
      if (cqe.res > 0 && !Consume(fd, *c)) return;
      if (!more && !stop_) ArmRecv(*c);  // out of buffers for a moment, or the kernel's choice
      return;
    }
    case kOpSend: {
      Conn* c = BySerial(serial);
      if (c == nullptr) {
        graveyard_.erase(serial);
        return;
      }
      c->send_in_flight = false;
      if (cqe.res < 0) {  // the client is gone: its end of stream comes through the receive
        c->sending.clear();
        c->sending_done = 0;
        c->out.clear();
        c->out_done = 0;
        return;
      }
      c->sending_done += static_cast<size_t>(cqe.res);
      if (c->sending_done < c->sending.size()) {  // a short send: the rest, first
        c->send_in_flight = true;
        io_uring_sqe* sqe = Sqe();
        io_uring_prep_send(sqe, c->fd.get(), c->sending.data() + c->sending_done,
                           c->sending.size() - c->sending_done, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, Tag(c->serial, kOpSend));
        return;
      }
      c->sending.clear();
      c->sending_done = 0;
      SendNext(*c);
      return;
    }
  }
}

int Server::RunUring() {
  ArmAccept();
  ArmDonePoll();
  while (!stop_) {
    const int64_t wake = NextWakeNs();
    // As the epoll loop: look for the next completions (the replies of this turn submitted
    // first) before sleeping. Under DEFER_TASKRUN completions are posted only when this
    // thread asks (io_uring_get_events), so each look is that call.
    int64_t until = 0;
    if (io_uring_cq_ready(&ring_) == 0 && SpinWindow(wake, &until)) {
      io_uring_submit(&ring_);
      LookUntil(until, [&] {
        io_uring_get_events(&ring_);
        return io_uring_cq_ready(&ring_) != 0;
      });
    }
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts = {};
    if (wake != INT64_MAX) {
      const int64_t left = std::max<int64_t>(0, wake - MonotonicNowNs()) + 1'000'000;
      ts.tv_sec = left / 1'000'000'000;
      ts.tv_nsec = left % 1'000'000'000;
    }
    int r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, wake == INT64_MAX ? nullptr : &ts, nullptr);
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) return 1;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      // Past a stop (a Shutdown request earlier in this batch), only sends are settled, as
      // below: a send's completion skipped here would leave it in flight (the drain below
      // waiting out its bound) and its unsent rest lost.
      if (!stop_) {
        OnUringCqe(*cqe);
      } else {
        SettleSendAtStop(*cqe);
      }
    }
    io_uring_cq_advance(&ring_, seen);
    Expire(MonotonicNowNs());
  }
  // What is in flight finishes before the last replies are written directly (bounded).
  const int64_t until = MonotonicNowNs() + 1'000'000'000;
  auto sending = [&] {
    for (const auto& [fd, c] : conns_) {
      if (c.send_in_flight) return true;
    }
    return false;
  };
  while (sending() && MonotonicNowNs() < until) {
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts = {0, 50'000'000};
    io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      SettleSendAtStop(*cqe);
    }
    io_uring_cq_advance(&ring_, seen);
  }
  return Finish();
}

void Server::SettleSendAtStop(const io_uring_cqe& cqe) {
  const uint64_t data = io_uring_cqe_get_data64(&cqe);
  if ((data & 7) != kOpSend) return;
  Conn* c = BySerial(data >> 3);
  if (c == nullptr) return;
  c->send_in_flight = false;
  if (cqe.res > 0) c->sending_done += static_cast<size_t>(cqe.res);
  // The unsent rest goes first (Finish writes it directly), before what queued up behind it.
  c->out = c->sending.substr(std::min(c->sending_done, c->sending.size())) +
           c->out.substr(c->out_done);
  c->out_done = 0;
  c->sending.clear();
  c->sending_done = 0;
}

}  // namespace

int ServeManager(UniqueFd listener, ServerConfig config) {
  return ServeManagerUntil(std::move(listener), std::move(config), std::stop_token());
}

int ServeManagerUntil(UniqueFd listener, ServerConfig config, std::stop_token stop) {
  ::signal(SIGPIPE, SIG_IGN);
  if (!config.standalone) {
    ::signal(SIGINT, SIG_IGN);  // a terminal's Ctrl-C is the owner's to handle (CPython's rule)
    // Its owner's Shutdown would remove the socket (and its directory); with the owner gone,
    // the server does, so a killed owner leaves nothing behind.
    ExitWhenParentExits([path = config.socket_path, dir = config.socket_dir] {
      if (!path.empty()) ::unlink(path.c_str());
      if (!dir.empty()) ::rmdir(dir.c_str());
    });
  }
  Server server(std::move(listener), std::move(config), std::move(stop));
  return server.Run();
}

}  // namespace mproc::manager_internal
