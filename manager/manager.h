// manager/manager.h — Manager: objects that live in a server process, used from any process
// through proxies (CPython's multiprocessing.Manager / SyncManager).
//
//   MPROC_ASSIGN_OR_RETURN(std::unique_ptr<Manager> m, Manager::Start());
//   MPROC_ASSIGN_OR_RETURN(auto d, m->Dict<std::string, int>());
//   MPROC_ASSIGN_OR_RETURN(auto l, m->List<int>());
//   Process p(Work, d, l);                 // proxies are handles: pass them to children
//   ... in Work:  d.Set("visits", 1); l.Append(42);
//   MPROC_ASSIGN_OR_RETURN(int v, d.Get("visits"));   // NOT_FOUND for a missing key (KeyError)
//   MPROC_RETURN_IF_ERROR(m->Shutdown());
//
// The server is a Process (forkserver by default, fork or spawn as chosen) started by Start;
// its address is known when Start returns (the parent binds the socket and hands it over). It
// serves every client from one event-loop thread (manager/internal/server.h; io_uring by
// default, epoll when asked or when the kernel lacks what the loop needs: ManagerOptions), so
// each call on an object is atomic. After a turn that served a request the loop looks for the
// next one for up to the spin budget (base/spin.h: 50 us, MPROC_SPIN_US=0 turns it off),
// yielding its CPU between looks, before it sleeps: a client's next call then finds it awake.
// Values travel as codec bytes and are kept as bytes: the server runs none of the user's code
// and knows none of their types.
//
// Proxies (DictProxy, ListProxy, ArrayProxy, SetProxy, NamespaceProxy, ValueProxy, ...) are
// cheap copyable handles, as every mproc handle: pass one to a child under any start method, put one in a Queue or send
// it over a Pipe. Each process holds its own reference (a lease) per object; the server drops
// it when the last copy in that process goes away (no round trip: a one-way message) or when
// the process's connection closes, however the process ended. A proxy in flight holds a
// reference until the receiver claims it, for at most 60 s (a later claim fails). A proxy a
// fork child inherited takes its own reference on first use; if every other holder dropped
// the object in between, that use is NOT_FOUND.
//
// Errors: a missing key NOT_FOUND ("KeyError"), an index outside the list OUT_OF_RANGE
// ("IndexError"), a value not in the list NOT_FOUND ("ValueError"); the manager gone (killed,
// crashed) ABORTED naming its pid, on the call in flight and every later one, at once (its
// socket closes), never a silent reconnect; after Shutdown (in the process that started it)
// FAILED_PRECONDITION; a manager restarted on the same address is another instance, and a
// proxy of the old one says so (FAILED_PRECONDITION) instead of reaching another object;
// nothing listening UNAVAILABLE; a call whose timeout passes DEADLINE_EXCEEDED (WithTimeout).
//
// The server exits when the process that started it ends (SIGKILL included), ignores SIGINT
// (the owner decides), and is shut down by Shutdown or the Manager's destructor.
//
// The synchronisation types (QueueProxy, JoinableQueueProxy, LockProxy for Lock and RLock,
// SemaphoreProxy, EventProxy, ConditionProxy, BarrierProxy) block in the server, never in a
// server thread: a blocking call is parked with its timeout and answered when it can go on.
//
// Objects of your own types live there too (Make, ObjectProxy), with methods that run in the
// server; registered by name (RegisterType, RegisterMethod), clients built from other sources
// make and call them by name (Create, NamedObjectProxy). DictProxy::Update / ValueProxy::Update run a function of yours on a stored value in
// the server (the race-free `d[k] += 1`), and DictProxy::CompareAndSet does it without code.
//
// CreateSharedMemory makes segments the server unlinks when it shuts down (CPython's
// SharedMemoryManager). An initializer can run in the server before it serves (Start's
// overload).
//
// Proxies kept inside containers are live (a Dict of Lists, a List of Queue proxies): the
// container holds one reference per proxy it keeps, any number of readers in any process
// reach the same object, and overwriting, deleting or dropping the container lets go of it.
// References are counted: a container that holds itself (a cycle) stays until the cycle is
// broken or the manager ends. A value holding proxies cannot be changed by Update (the
// server would have to call itself).
//
// A Pool can live in the manager too (Pool, PoolProxy): its workers are the server's
// children, and Apply/Map park in the server while the tasks run.
//
// Thread-safety: Manager and proxies may be used from any thread (but Manager::Shutdown, and
// the destructor, not concurrently with other calls on that Manager). Calls from the threads
// of one process share its connection and take turns on it.
#ifndef MPROC_MANAGER_MANAGER_H_
#define MPROC_MANAGER_MANAGER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/listener.h"
#include "manager/internal/client.h"
#include "manager/internal/objects.h"
#include "manager/internal/protocol.h"
#include "manager/internal/server.h"
#include "pool/internal/task_protocol.h"
#include "pool/pool.h"
#include "serialize/codec.h"
#include "shm/shared_memory.h"
#include "base/mutex.h"
#include "base/owner.h"
#include "base/process_id.h"
#include "spawn/process.h"
#include "sync/lock.h"

namespace mproc {

namespace manager_internal {

// A Manager keeps values as bytes, in its own process, where a descriptor means nothing (the
// encoding holds only its index among the frame's descriptors). Arguments encoded straight
// into a buffer are refused at run time instead (MethodMessage, internal/client.cc).
template <typename T>
std::string ToBytes(const T& v) {
  static_assert(!kTypeCarriesFds<T>,
                "a Manager keeps values as bytes: values that carry descriptors (SharedBytes, "
                "UniqueFd) cannot be stored in it or passed to its objects; send them through an "
                "mproc::Queue (ipc/queue.h) or a Pipe, not a Manager's");
  EncodeBuffer b;
  Encode(v, b);
  return std::string(reinterpret_cast<const char*>(b.bytes().data()), b.size());
}

template <typename T>
[[nodiscard]] absl::StatusOr<T> FromBytes(const std::string& bytes) {
  return Decode<T>(AsBytes(bytes));
}

template <typename T>
std::vector<std::string> ToEach(const std::vector<T>& vs) {
  std::vector<std::string> raw;
  raw.reserve(vs.size());
  for (const T& v : vs) raw.push_back(ToBytes(v));
  return raw;
}

// Values to be kept in the manager instance `nonce`: its proxies inside them are embedded (held
// by the value itself, read by any number of readers), not tickets (client.h, EmbedScope).
template <typename T>
std::string ToBytesIn(uint64_t nonce, const T& v) {
  EmbedScope scope(nonce);
  return ToBytes(v);
}
template <typename T>
std::vector<std::string> ToEachIn(uint64_t nonce, const std::vector<T>& vs) {
  EmbedScope scope(nonce);
  return ToEach(vs);
}

template <typename T>
[[nodiscard]]
absl::StatusOr<std::vector<T>> FromEach(absl::StatusOr<std::vector<std::string>> raw) {
  if (!raw.ok()) return raw.status();
  std::vector<T> out;
  out.reserve(raw->size());
  for (const std::string& b : *raw) {
    MPROC_ASSIGN_OR_RETURN(T v, FromBytes<T>(b));
    out.push_back(std::move(v));
  }
  return out;
}

// The result of a user method run in the server (objects.h): its value, or its exception as
// ABORTED with the RemoteError.
template <typename Out>
[[nodiscard]] absl::StatusOr<Out> TaggedValue(const absl::StatusOr<std::string>& raw) {
  static_assert(!kTypeCarriesFds<Out>,
                "a Manager's server sends results as bytes: a result that carries descriptors "
                "(SharedBytes, UniqueFd) cannot come back from it");
  if (!raw.ok()) return raw.status();
  DecodeReader r(AsBytes(*raw));
  uint8_t tag = 0;
  if (!Codec<uint8_t>::Decode(r, tag)) return r.status();
  if (tag == kObjectError) {
    RemoteError e;
    if (!Codec<RemoteError>::Decode(r, e)) return r.status();
    return RemoteErrorToStatus(e);
  }
  Out v{};
  if (tag != kObjectValue || !Codec<Out>::Decode(r, v)) {
    return absl::InternalError("a malformed object reply");
  }
  return v;
}

// The part every proxy shares: its reference, swapped for this process's own on first use in
// a fork child.
class ProxyBase {
 public:
  ProxyBase() = default;
  explicit ProxyBase(std::shared_ptr<ProxyRef> ref) : ref_(std::move(ref)) {}
  ProxyBase(const ProxyBase& o) : ref_(o.ref_.load()), timeout_(o.timeout_) {}
  ProxyBase& operator=(const ProxyBase& o) {
    ref_.store(o.ref_.load());
    timeout_ = o.timeout_;
    return *this;
  }
  // ProxyBase::valid()
  //
  // True when this proxy names an object; false for a default-constructed one (its calls are
  // FAILED_PRECONDITION). Says nothing of whether the object or its manager still exists.
  // Never blocks; thread-safe.
  bool valid() const { return ref_.load() != nullptr; }
  // This handle's reference (for the manager's own use: a Condition over a lock).
  std::shared_ptr<ProxyRef> ref() const { return ref_.load(); }

 protected:
  using M = Method;

  // Calls `m` with `args` (each encoded as the server expects) and decodes a result of R.
  template <typename R, typename... A>
  [[nodiscard]] absl::StatusOr<R> Call(Method m, const A&... args) const {
    MPROC_ASSIGN_OR_RETURN(std::string out, Raw(m, args...));
    return FromBytes<R>(out);
  }
  template <typename... A>
  absl::Status CallVoid(Method m, const A&... args) const {
    return Raw(m, args...).status();
  }
  template <typename... A>
  [[nodiscard]] absl::StatusOr<std::string> Raw(Method m, const A&... args) const {
    return RawWithin(timeout_, m, args...);
  }
  // With the client's own deadline `within` (blocking calls: the server answers at their
  // timeout; the client waits a little longer).
  template <typename... A>
  [[nodiscard]]
  absl::StatusOr<std::string> RawWithin(absl::Duration within, Method m, const A&... args) const {
    EncodeBuffer b;
    (Encode(args, b), ...);
    std::shared_ptr<ProxyRef> cur = ref_.load();
    MPROC_ASSIGN_OR_RETURN(std::shared_ptr<ProxyRef> own, OwnRef(cur));
    if (own != cur) ref_.store(own);
    return CallMethod(own, m, b, within);
  }
  // A blocking call's server timeout (-1: none) and the client's deadline for it.
  static int64_t TimeoutNs(absl::Duration t) {
    if (t == absl::InfiniteDuration()) return -1;
    return std::max<int64_t>(0, absl::ToInt64Nanoseconds(t));
  }
  static absl::Duration ClientWait(absl::Duration t) {
    return t == absl::InfiniteDuration() ? t : t + absl::Seconds(10);
  }
  // A call whose arguments are already encoded.
  [[nodiscard]] absl::StatusOr<std::string> RawBytes(Method m, const EncodeBuffer& args) const {
    std::shared_ptr<ProxyRef> cur = ref_.load();
    MPROC_ASSIGN_OR_RETURN(std::shared_ptr<ProxyRef> own, OwnRef(cur));
    if (own != cur) ref_.store(own);
    return CallMethod(own, m, args, timeout_);
  }
  template <typename R, typename... A>
  [[nodiscard]] absl::StatusOr<R> Blocking(absl::Duration t, Method m, const A&... args) const {
    MPROC_ASSIGN_OR_RETURN(std::string out, RawWithin(ClientWait(t), m, args...));
    return FromBytes<R>(out);
  }
  void SetTimeout(absl::Duration t) { timeout_ = t; }
  // Values encoded to be kept in this proxy's manager (ToBytesIn).
  template <typename T>
  std::string Enc(const T& v) const {
    return ToBytesIn(Nonce(), v);
  }
  template <typename T>
  std::vector<std::string> EncEach(const std::vector<T>& vs) const {
    return ToEachIn(Nonce(), vs);
  }
  uint64_t Nonce() const {
    std::shared_ptr<ProxyRef> r = ref_.load();
    return r != nullptr ? r->mgr.nonce : 0;
  }
  // A value the server keeps as bytes (an element), decoded as T here; and a list of them.
  template <typename T, typename... A>
  [[nodiscard]] absl::StatusOr<T> CallKept(Method m, const A&... args) const {
    MPROC_ASSIGN_OR_RETURN(std::string raw, Call<std::string>(m, args...));
    return FromBytes<T>(raw);
  }
  template <typename T, typename... A>
  [[nodiscard]] absl::StatusOr<std::vector<T>> CallKeptEach(Method m, const A&... args) const {
    return FromEach<T>(Call<std::vector<std::string>>(m, args...));
  }

  // Runs fn(value&, args...) in the server on the stored value of type V (after `key`, for a
  // dict), atomically; returns fn's result (std::monostate for void).
  template <typename V, typename F, typename... A>
  auto Apply(Method m, const std::string* key, F fn, A&&... args) const {
    auto f = +fn;
    using Traits = MethodTraits<decltype(f)>;
    using R = typename Traits::Result;
    static_assert(std::is_same_v<typename Traits::Object, V>,
                  "the update's first parameter must be V& for the stored value's type V");
    using Out = std::conditional_t<std::is_void_v<R>, std::monostate, R>;
    EncodeBuffer b;
    if (key != nullptr) Encode(*key, b);
    Encode(Traits::kBytesEntry, b);
    Encode(f, b);
    Encode(typename Traits::Args(std::forward<A>(args)...), b);
    return TaggedValue<Out>(RawBytes(m, b));
  }

  mutable std::atomic<std::shared_ptr<ProxyRef>> ref_;
  absl::Duration timeout_ = absl::InfiniteDuration();  // per call

  template <typename P, Kind K, typename... E>
  friend struct ProxyCodec;
};

template <typename P, Kind K, typename... E>
struct ProxyCodec {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const P& p) { EncodeProxy(b, p.ref_.load()); }
  static bool Decode(DecodeReader& r, P& out) {
    std::shared_ptr<ProxyRef> ref;
    if (!DecodeProxy(r, K, Fingerprint<E...>(), &ref)) return false;
    out.ref_.store(std::move(ref));
    return true;
  }
};

}  // namespace manager_internal

// ---- Proxy calls: what every method of the proxies below shares ----
//
// A method is a request to the manager's server and its reply (Map and WaitFor make several),
// over this process's one connection to that manager (its threads share it: a call parked in
// the server holds up no other thread's call). The server runs one call at a time, so each
// call is atomic. A call blocks until its reply comes: with no limit, or, on a WithTimeout
// copy (DictProxy, ListProxy), up to its timeout. Blocking methods (Put, Get, Join, Acquire,
// Wait) hand their own timeout to the server, which parks the call and answers when it can
// go on or the timeout passes; this process gives up (DEADLINE_EXCEEDED) only 10 s after
// that timeout.
// Errors any call can return, besides those its own block lists ("as every proxy call"):
//   ABORTED: the manager is gone (killed, crashed) or this process's connection to it broke:
//     at once, for the call in flight and every later call of this process to that manager
//     (no reconnect). (ABORTED carrying a RemoteError is instead an exception your code threw
//     in the server.)
//   RESOURCE_EXHAUSTED: the request or its reply is over the 256 MiB message limit; that call
//     alone fails (a request is not sent; a reply's call was carried out), the connection
//     stays.
//   FAILED_PRECONDITION: this process shut the manager down (Manager::Shutdown); the manager
//     at the address is another instance (restarted); the proxy is empty.
//   UNAVAILABLE, UNAUTHENTICATED: this process could not connect (nothing listens; a wrong
//     key, or a handshake not finished in time); a later call tries again.
//   DEADLINE_EXCEEDED: the call's timeout passed. The server may still carry the call out.
//   NOT_FOUND: in a fork child, the first use of an inherited proxy whose object no longer
//     exists (every other holder dropped it).
//   INVALID_ARGUMENT: what came back does not decode as the proxy's types (or holds a proxy
//     that cannot be claimed); or the proxy was decoded as another kind with the same element
//     types (a ListProxy<int> received as a SetProxy<int>): the server refuses each method
//     the object's own kind lacks.
// Thread-safety: a proxy may be used by any number of threads at once (not while it is
// assigned to). Process-safety: copies in any processes (passed to a child, sent through a
// Queue or Pipe, inherited by fork) reach the same object, each process with its own reference.

// A dict in the manager: keys and values by their codecs (keys compare by encoded bytes),
// iteration in insertion order, as Python's. Keys(), Values() and Items() are snapshots.
template <typename K, typename V>
class DictProxy : public manager_internal::ProxyBase {
  using Bytes = std::string;

 public:
  using ProxyBase::ProxyBase;

  // DictProxy::Set(k, v)
  //
  // d[k] = v: a new key goes last in the order, an existing one keeps its place. Errors as
  // every proxy call.
  absl::Status Set(const K& k, const V& v) const {
    return CallVoid(M::kDictSet, Key(k), Enc(v));
  }
  // DictProxy::Get(k)
  //
  // d[k]. NOT_FOUND ("KeyError") when `k` is absent; else as every proxy call.
  [[nodiscard]] absl::StatusOr<V> Get(const K& k) const { return CallKept<V>(M::kDictGet, Key(k)); }
  // DictProxy::Get(k, otherwise)
  //
  // Python's get(k, default): `otherwise` on any NOT_FOUND, which includes a fork child's
  // inherited proxy whose object is gone (see Proxy calls); other errors as Get(k).
  [[nodiscard]] absl::StatusOr<V> Get(const K& k, const V& otherwise) const {
    absl::StatusOr<V> v = Get(k);
    if (absl::IsNotFound(v.status())) return otherwise;
    return v;
  }
  // DictProxy::Contains(k)
  //
  // k in d. Errors as every proxy call.
  [[nodiscard]]
  absl::StatusOr<bool> Contains(const K& k) const { return Call<bool>(M::kDictContains, Key(k)); }
  // DictProxy::Delete(k)
  //
  // del d[k]. NOT_FOUND ("KeyError") when `k` is absent; else as every proxy call.
  absl::Status Delete(const K& k) const { return CallVoid(M::kDictDel, Key(k)); }
  // DictProxy::Len()
  //
  // len(d). Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<size_t> Len() const {
    MPROC_ASSIGN_OR_RETURN(uint64_t n, Call<uint64_t>(M::kDictLen));
    return static_cast<size_t>(n);
  }
  // DictProxy::Keys(), DictProxy::Values(), DictProxy::Items()
  //
  // Snapshots in insertion order, each taken in one call. Errors as every proxy call.
  [[nodiscard]]
  absl::StatusOr<std::vector<K>> Keys() const { return CallKeptEach<K>(M::kDictKeys); }
  [[nodiscard]]
  absl::StatusOr<std::vector<V>> Values() const { return CallKeptEach<V>(M::kDictValues); }
  [[nodiscard]] absl::StatusOr<std::vector<std::pair<K, V>>> Items() const {
    MPROC_ASSIGN_OR_RETURN(auto raw, (Call<std::vector<std::pair<Bytes, Bytes>>>(M::kDictItems)));
    std::vector<std::pair<K, V>> out;
    out.reserve(raw.size());
    for (auto& [k, v] : raw) {
      MPROC_ASSIGN_OR_RETURN(K key, manager_internal::FromBytes<K>(k));
      MPROC_ASSIGN_OR_RETURN(V value, manager_internal::FromBytes<V>(v));
      out.emplace_back(std::move(key), std::move(value));
    }
    return out;
  }
  // DictProxy::Clear()
  //
  // Removes every item. Errors as every proxy call.
  absl::Status Clear() const { return CallVoid(M::kDictClear); }
  // DictProxy::Pop(k)
  //
  // d.pop(k): removes `k` and returns its value. NOT_FOUND ("KeyError") when `k` is absent;
  // else as every proxy call.
  [[nodiscard]] absl::StatusOr<V> Pop(const K& k) const { return CallKept<V>(M::kDictPop, Key(k)); }
  // DictProxy::SetDefault(k, v)
  //
  // Python's setdefault: stores `v` under `k` unless `k` is there, in one call, and returns
  // the value now stored under `k`. Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<V> SetDefault(const K& k, const V& v) const {
    return CallKept<V>(M::kDictSetDefault, Key(k), Enc(v));
  }
  // DictProxy::Update(items)
  //
  // d.update(items): sets each pair in order, in one call (a later duplicate key wins).
  // Errors as every proxy call.
  absl::Status Update(const std::vector<std::pair<K, V>>& items) const {
    std::vector<std::pair<Bytes, Bytes>> raw;
    raw.reserve(items.size());
    for (const auto& [k, v] : items) raw.emplace_back(Key(k), Enc(v));
    return CallVoid(M::kDictUpdate, raw);
  }
  // DictProxy::Update(k, fn, args...)
  //
  // The race-free spelling of `d[k] += 1`: runs fn(value&, args...) in the server on the value
  // under `k`, with no other call on this dict in between, stores the changed value and
  // returns fn's result (std::monostate when it returns void). fn is a free function or a
  // captureless lambda whose first parameter is V&; the server must be the same executable
  // (Start, any start method): another one refuses fn with INVALID_ARGUMENT. NOT_FOUND when
  // `k` is absent; an exception fn throws comes back as ABORTED with its RemoteError and
  // leaves the value as it was (so does a stored value that does not decode as V in the
  // server, or that holds proxies). fn runs on the server's one thread: no other client is
  // served until it returns. Else as every proxy call.
  //
  //   int visits = d.Update("visits", [](int& v) { return ++v; }).value();
  template <typename F, typename... A>
  auto Update(const K& k, F fn, A&&... args) const {
    const Bytes key = Key(k);
    return Apply<V>(M::kDictApply, &key, fn, std::forward<A>(args)...);
  }
  // DictProxy::CompareAndSet(k, expected, desired)
  //
  // Stores `desired` under `k` only if the value there now equals `expected` (by encoded
  // bytes), or, for a nullopt `expected`, only if `k` is absent: true when it stored. Needs no
  // code in the server (works with a manager of another executable). Errors as every proxy
  // call.
  [[nodiscard]] absl::StatusOr<bool> CompareAndSet(const K& k, const std::optional<V>& expected,
                                     const V& desired) const {
    std::optional<Bytes> want;
    if (expected.has_value()) want = Enc(*expected);
    return Call<bool>(M::kDictCompareSet, Key(k), want, Enc(desired));
  }
  // DictProxy::WithTimeout(t)
  //
  // A copy whose calls give up after `t` with DEADLINE_EXCEEDED (the server may still carry
  // such a call out), sharing this one's reference. The timeout stays with this copy: a copy
  // sent to another process arrives without it. Never blocks.
  DictProxy WithTimeout(absl::Duration t) const {
    DictProxy copy(*this);
    copy.SetTimeout(t);
    return copy;
  }

 private:
  Bytes Key(const K& k) const { return Enc(k); }
};

namespace manager_internal {

// What a List and an Array share: indexing as Python's (negative indexes count from the end),
// slices, searches.
template <typename T>
class SequenceProxy : public ProxyBase {
 public:
  using ProxyBase::ProxyBase;

  // SequenceProxy::Get(i) (ListProxy and ArrayProxy alike, as every method below)
  //
  // s[i], a negative `i` counting from the end. OUT_OF_RANGE ("IndexError") outside the
  // sequence; else as every proxy call.
  [[nodiscard]] absl::StatusOr<T> Get(int64_t i) const {
    return CallKept<T>(M::kListGet, i);
  }
  // SequenceProxy::Set(i, v)
  //
  // s[i] = v. OUT_OF_RANGE ("IndexError") outside the sequence; else as every proxy call.
  absl::Status Set(int64_t i, const T& v) const { return CallVoid(M::kListSet, i, Enc(v)); }
  // SequenceProxy::Len()
  //
  // len(s). Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<size_t> Len() const {
    MPROC_ASSIGN_OR_RETURN(uint64_t n, Call<uint64_t>(M::kListLen));
    return static_cast<size_t>(n);
  }
  // SequenceProxy::Index(v)
  //
  // The first index holding `v` (compared by encoded bytes); NOT_FOUND ("ValueError") when
  // none does; else as every proxy call.
  [[nodiscard]] absl::StatusOr<size_t> Index(const T& v) const {
    MPROC_ASSIGN_OR_RETURN(uint64_t i, Call<uint64_t>(M::kListIndex, Enc(v)));
    return static_cast<size_t>(i);
  }
  // SequenceProxy::Count(v)
  //
  // How many elements equal `v` (by encoded bytes). Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<size_t> Count(const T& v) const {
    MPROC_ASSIGN_OR_RETURN(uint64_t n, Call<uint64_t>(M::kListCount, Enc(v)));
    return static_cast<size_t>(n);
  }
  // SequenceProxy::Slice(start, stop)
  //
  // Python's s[start:stop] (a copy; indexes clamped as Python's, step 1; empty when `stop` is
  // not after `start`). Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<std::vector<T>> Slice(int64_t start, int64_t stop) const {
    return CallKeptEach<T>(M::kListSlice, start, stop);
  }
  // SequenceProxy::ToVector()
  //
  // The whole sequence (a copy, as Python's list(proxy)), taken in one call. Errors as every
  // proxy call.
  [[nodiscard]] absl::StatusOr<std::vector<T>> ToVector() const {
    return CallKeptEach<T>(M::kListAll);
  }
  // SequenceProxy::SetSlice(start, stop, values)
  //
  // Python's s[start:stop] = values (indexes clamped; a `stop` before `start` is an empty
  // slice at `start`): a List grows or shrinks; an Array refuses (INVALID_ARGUMENT) unless the
  // values fill the slice exactly. Else as every proxy call.
  absl::Status SetSlice(int64_t start, int64_t stop, const std::vector<T>& values) const {
    return CallVoid(M::kListSetSlice, start, stop, EncEach(values));
  }
};

}  // namespace manager_internal

// A list in the manager. Indexes are Python's: negative ones count from the end.
template <typename T>
class ListProxy : public manager_internal::SequenceProxy<T> {
  using M = manager_internal::Method;
  using Base = manager_internal::SequenceProxy<T>;

 public:
  using Base::Base;

  // ListProxy::Append(v), ListProxy::Extend(vs)
  //
  // l.append(v); l.extend(vs) in one call. Errors as every proxy call.
  absl::Status Append(const T& v) const { return this->CallVoid(M::kListAppend, this->Enc(v)); }
  absl::Status Extend(const std::vector<T>& vs) const {
    return this->CallVoid(M::kListExtend, this->EncEach(vs));
  }
  // ListProxy::Pop(i)
  //
  // Removes and returns l[i] (the last by default). OUT_OF_RANGE ("IndexError") when the list
  // is empty or `i` is outside it; else as every proxy call.
  [[nodiscard]] absl::StatusOr<T> Pop(int64_t i = -1) const {
    return this->template CallKept<T>(M::kListPop, i);
  }
  // ListProxy::Insert(i, v)
  //
  // Python's insert: the index (negative from the end) is clamped to the list, so no index
  // fails. Errors as every proxy call.
  absl::Status Insert(int64_t i, const T& v) const {
    return this->CallVoid(M::kListInsert, i, this->Enc(v));
  }
  // ListProxy::Remove(v)
  //
  // Removes the first `v` (by encoded bytes); NOT_FOUND ("ValueError") when there is none;
  // else as every proxy call.
  absl::Status Remove(const T& v) const { return this->CallVoid(M::kListRemove, this->Enc(v)); }
  // ListProxy::Reverse(), ListProxy::Clear()
  //
  // In place, in one call. Errors as every proxy call.
  absl::Status Reverse() const { return this->CallVoid(M::kListReverse); }
  absl::Status Clear() const { return this->CallVoid(M::kListClear); }
  // ListProxy::Repeat(n)
  //
  // Python's l *= n (n <= 0 empties it). RESOURCE_EXHAUSTED ("MemoryError"), the list
  // unchanged, when the result would pass 1 GiB as the server counts it; else as every proxy
  // call.
  absl::Status Repeat(int64_t n) const { return this->CallVoid(M::kListRepeat, n); }
  // ListProxy::WithTimeout(t)
  //
  // As DictProxy::WithTimeout.
  ListProxy WithTimeout(absl::Duration t) const {
    ListProxy copy(*this);
    copy.SetTimeout(t);
    return copy;
  }
};

// A fixed-size array in the manager (CPython's Manager().Array): a sequence that keeps its
// length (no method changes it; SetSlice must fill the slice exactly).
template <typename T>
class ArrayProxy : public manager_internal::SequenceProxy<T> {
 public:
  using manager_internal::SequenceProxy<T>::SequenceProxy;
};

// A set in the manager (CPython 3.14's Manager().set()): elements compare by their encoded
// bytes; ToVector lists them in the order of those bytes (not by value).
template <typename T>
class SetProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;

  // SetProxy::Add(v)
  //
  // Adds `v`: true when it was not there before. Errors as every proxy call.
  [[nodiscard]]
  absl::StatusOr<bool> Add(const T& v) const { return Call<bool>(M::kSetAdd, Enc(v)); }
  // SetProxy::Discard(v)
  //
  // Removes `v` if it is there: true when it was. Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<bool> Discard(const T& v) const {
    return Call<bool>(M::kSetDiscard, Enc(v));
  }
  // SetProxy::Remove(v)
  //
  // Removes `v`; NOT_FOUND ("KeyError") when it is not there; else as every proxy call.
  absl::Status Remove(const T& v) const { return CallVoid(M::kSetRemove, Enc(v)); }
  // SetProxy::Pop()
  //
  // Some element (the first in encoded-byte order), removed; NOT_FOUND ("KeyError") when the
  // set is empty; else as every proxy call.
  [[nodiscard]] absl::StatusOr<T> Pop() const {
    return CallKept<T>(M::kSetPop);
  }
  // SetProxy::Contains(v), SetProxy::Len()
  //
  // v in s; len(s). Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<bool> Contains(const T& v) const {
    return Call<bool>(M::kSetContains, Enc(v));
  }
  [[nodiscard]] absl::StatusOr<size_t> Len() const {
    MPROC_ASSIGN_OR_RETURN(uint64_t n, Call<uint64_t>(M::kSetLen));
    return static_cast<size_t>(n);
  }
  // SetProxy::ToVector()
  //
  // Every element, in encoded-byte order (not by value), taken in one call. Errors as every
  // proxy call.
  [[nodiscard]] absl::StatusOr<std::vector<T>> ToVector() const {
    return CallKeptEach<T>(M::kSetAll);
  }
  // SetProxy::Clear(), SetProxy::Update(vs)
  //
  // s.clear(); s.update(vs) in one call. Errors as every proxy call.
  absl::Status Clear() const { return CallVoid(M::kSetClear); }
  absl::Status Update(const std::vector<T>& vs) const {
    return CallVoid(M::kSetUpdate, EncEach(vs));
  }
};

// CPython's Namespace: named attributes of any encodable type.
class NamespaceProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;

  // NamespaceProxy::Set(name, v)
  //
  // Sets attribute `name` to `v`, of any encodable type. Errors as every proxy call.
  template <typename T>
  absl::Status Set(const std::string& name, const T& v) const {
    return CallVoid(M::kNsSet, name, Enc(v));
  }
  // NamespaceProxy::Get<T>(name)
  //
  // Attribute `name`, decoded as T. NOT_FOUND ("AttributeError") when the namespace has no
  // `name`. No type is recorded: a value set as another type is INVALID_ARGUMENT when its
  // bytes do not decode as T. Else as every proxy call.
  template <typename T>
  [[nodiscard]] absl::StatusOr<T> Get(const std::string& name) const {
    return CallKept<T>(M::kNsGet, name);
  }
  // NamespaceProxy::Delete(name)
  //
  // delattr: NOT_FOUND ("AttributeError") when there is no `name`; else as every proxy call.
  absl::Status Delete(const std::string& name) const { return CallVoid(M::kNsDel, name); }
  // NamespaceProxy::Names()
  //
  // The attribute names, sorted. Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> Names() const {
    return Call<std::vector<std::string>>(M::kNsNames);
  }
};

// A single value in the manager (CPython's Manager().Value).
template <typename T>
class ValueProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;

  // ValueProxy::Get(), ValueProxy::Set(v)
  //
  // Reads the value; replaces it. Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<T> Get() const {
    return CallKept<T>(M::kValueGet);
  }
  absl::Status Set(const T& v) const { return CallVoid(M::kValueSet, Enc(v)); }
  // ValueProxy::Update(fn, args...)
  //
  // Runs fn(value&, args...) in the server, atomically (the race-free `v.value += 1`); as
  // DictProxy::Update, without its NOT_FOUND.
  template <typename F, typename... A>
  auto Update(F fn, A&&... args) const {
    return Apply<T>(M::kValueApply, nullptr, fn, std::forward<A>(args)...);
  }
};

// A queue in the manager (CPython's Manager().Queue()): FIFO, maxsize 0 for unbounded.
// Put blocks while it is full and Get while it is empty, up to their timeouts, parked in the
// server (no thread of the server blocks); DEADLINE_EXCEEDED when the timeout passes,
// RESOURCE_EXHAUSTED / UNAVAILABLE for PutNowait on a full one / GetNowait on an empty one.
template <typename T>
class QueueProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;

  // QueueProxy::Put(v, timeout)
  //
  // Appends `v`; while the queue is full (maxsize), waits parked in the server up to
  // `timeout`. Errors: DEADLINE_EXCEEDED (still full at the timeout; nothing was put),
  // RESOURCE_EXHAUSTED (full, with a zero timeout); else as every proxy call.
  absl::Status Put(const T& v, absl::Duration timeout = absl::InfiniteDuration()) const {
    return RawWithin(ClientWait(timeout), M::kQueuePut, Enc(v),
                     TimeoutNs(timeout))
        .status();
  }
  // QueueProxy::PutNowait(v)
  //
  // Put with a zero timeout: RESOURCE_EXHAUSTED ("queue is full") instead of waiting.
  absl::Status PutNowait(const T& v) const { return Put(v, absl::ZeroDuration()); }
  // QueueProxy::Get(timeout)
  //
  // Removes and returns the oldest item; while the queue is empty, waits parked in the server
  // up to `timeout` (parked Gets are served first come, first served). Errors:
  // DEADLINE_EXCEEDED (nothing came), UNAVAILABLE (empty, with a zero timeout),
  // INVALID_ARGUMENT (the item does not decode as T; it was removed all the same); else as
  // every proxy call.
  [[nodiscard]] absl::StatusOr<T> Get(absl::Duration timeout = absl::InfiniteDuration()) const {
    MPROC_ASSIGN_OR_RETURN(std::string raw,
                           (Blocking<std::string>(timeout, M::kQueueGet, TimeoutNs(timeout))));
    return manager_internal::FromBytes<T>(raw);
  }
  // QueueProxy::GetNowait()
  //
  // Get with a zero timeout: UNAVAILABLE ("queue is empty") instead of waiting.
  [[nodiscard]] absl::StatusOr<T> GetNowait() const { return Get(absl::ZeroDuration()); }
  // QueueProxy::Qsize(), QueueProxy::Empty(), QueueProxy::Full()
  //
  // The server's exact state at the moment of the call (others may change it at once); Full
  // is always false for maxsize 0. Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<size_t> Qsize() const {
    MPROC_ASSIGN_OR_RETURN(uint64_t n, Call<uint64_t>(M::kQueueSize));
    return static_cast<size_t>(n);
  }
  [[nodiscard]] absl::StatusOr<bool> Empty() const { return Call<bool>(M::kQueueEmpty); }
  [[nodiscard]] absl::StatusOr<bool> Full() const { return Call<bool>(M::kQueueFull); }
};

// A JoinableQueue: Join returns once TaskDone was called for every item put.
template <typename T>
class JoinableQueueProxy : public QueueProxy<T> {
  using M = manager_internal::Method;

 public:
  using QueueProxy<T>::QueueProxy;
  // JoinableQueueProxy::TaskDone()
  //
  // One item taken earlier is done. FAILED_PRECONDITION ("ValueError") when called more often
  // than items were put; INVALID_ARGUMENT when the object is a plain Queue (a QueueProxy
  // received as a JoinableQueueProxy); else as every proxy call.
  absl::Status TaskDone() const { return this->CallVoid(M::kQueueTaskDone); }
  // JoinableQueueProxy::Join(timeout)
  //
  // Waits, parked in the server, until TaskDone was called for every item put (OK at once
  // when none is pending; always, on a plain Queue). DEADLINE_EXCEEDED when `timeout` passes
  // first (at once for a zero timeout); else as every proxy call.
  absl::Status Join(absl::Duration timeout = absl::InfiniteDuration()) const {
    return this->RawWithin(this->ClientWait(timeout), M::kQueueJoin, this->TimeoutNs(timeout))
        .status();
  }
};

// A Lock or an RLock in the manager, owned by (process, thread) as CPython's manager locks
// are. A Lock may be released by any thread; an RLock only by the thread holding it, as often
// as it was acquired. A client that dies holding one frees it, and the next acquirer is told
// (previous_owner_died), where CPython's would stay locked forever.
class LockProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;

  // LockProxy::Acquire(timeout)
  //
  // Takes the lock for this thread, waiting parked in the server up to `timeout` (zero: one
  // attempt); waiters get it in arrival order. An RLock this thread holds is taken again, one
  // level deeper; a Lock this thread holds waits as for anyone. NotAcquired when the timeout
  // passed; previous_owner_died() when the last holder's process died holding it. Errors as
  // every proxy call.
  [[nodiscard]]
  absl::StatusOr<AcquireResult> Acquire(absl::Duration timeout = absl::InfiniteDuration()) const {
    using Pair = std::tuple<bool, bool>;
    MPROC_ASSIGN_OR_RETURN(Pair r, (Blocking<Pair>(timeout, M::kLockAcquire,
                                                   static_cast<uint64_t>(CurrentTid()),
                                                   TimeoutNs(timeout))));
    if (!std::get<0>(r)) return AcquireResult::NotAcquired();
    return std::get<1>(r) ? AcquireResult::OwnerDied() : AcquireResult::Acquired();
  }
  // LockProxy::Release()
  //
  // Releases the lock, or one level of an RLock; a Lock may be released by any thread of any
  // process. FAILED_PRECONDITION ("RuntimeError") for an unlocked lock, or an RLock this
  // thread does not hold; else as every proxy call.
  absl::Status Release() const {
    return CallVoid(M::kLockRelease, static_cast<uint64_t>(CurrentTid()));
  }
  // LockProxy::Locked()
  //
  // Whether anyone holds it, at the moment of the call. Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<bool> Locked() const { return Call<bool>(M::kLockLocked); }

 private:
  friend class ConditionProxy;
};
using RLockProxy = LockProxy;

// A Semaphore or BoundedSemaphore in the manager.
class SemaphoreProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;
  // SemaphoreProxy::Acquire(timeout)
  //
  // Takes one unit, waiting parked in the server up to `timeout` (zero: one attempt;
  // waiters are served in arrival order): true when taken, false when the timeout passed.
  // Errors as every proxy call.
  [[nodiscard]]
  absl::StatusOr<bool> Acquire(absl::Duration timeout = absl::InfiniteDuration()) const {
    return Blocking<bool>(timeout, M::kSemAcquire, TimeoutNs(timeout));
  }
  // SemaphoreProxy::Release(n)
  //
  // Gives back `n` units, waking up to `n` waiters. INVALID_ARGUMENT for n < 1;
  // FAILED_PRECONDITION ("ValueError") past a bounded semaphore's initial value (nothing is
  // released then); else as every proxy call.
  absl::Status Release(int64_t n = 1) const { return CallVoid(M::kSemRelease, n); }
  // SemaphoreProxy::GetValue()
  //
  // The free units at the moment of the call. Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<int64_t> GetValue() const { return Call<int64_t>(M::kSemValue); }
};
using BoundedSemaphoreProxy = SemaphoreProxy;

// An Event in the manager (CPython's Manager().Event()).
class EventProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;
  // EventProxy::Set(), EventProxy::Clear(), EventProxy::IsSet()
  //
  // Sets the flag (answering every waiter), clears it, reads it. Errors as every proxy call.
  absl::Status Set() const { return CallVoid(M::kEventSet); }
  absl::Status Clear() const { return CallVoid(M::kEventClear); }
  [[nodiscard]] absl::StatusOr<bool> IsSet() const { return Call<bool>(M::kEventIsSet); }
  // EventProxy::Wait(timeout)
  //
  // Waits, parked in the server, until the flag is set: true once set (at once if it is),
  // false when `timeout` passed first. Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<bool> Wait(absl::Duration timeout = absl::InfiniteDuration()) const {
    return Blocking<bool>(timeout, M::kEventWait, TimeoutNs(timeout));
  }
};

// A Condition over a manager Lock or RLock (Manager::Condition makes an RLock when given
// none). Wait releases the lock entirely, waits for a Notify, and takes it back at the same
// depth before returning (true: notified; false: the timeout passed).
class ConditionProxy : public manager_internal::ProxyBase {
 public:
  ConditionProxy() = default;
  ConditionProxy(std::shared_ptr<manager_internal::ProxyRef> r, LockProxy lock)
      : ProxyBase(std::move(r)), lock_(std::move(lock)) {}
  // ConditionProxy::Acquire(timeout), ConditionProxy::Release()
  //
  // Its lock's: LockProxy::Acquire and LockProxy::Release.
  [[nodiscard]]
  absl::StatusOr<AcquireResult> Acquire(absl::Duration timeout = absl::InfiniteDuration()) const {
    return lock_.Acquire(timeout);
  }
  absl::Status Release() const { return lock_.Release(); }
  // ConditionProxy::Wait(timeout)
  //
  // Releases the lock (at any RLock depth), waits parked in the server for a Notify up to
  // `timeout`, then takes the lock back at the same depth, however long that takes: true
  // when notified, false when the timeout passed. As Python's, taking the lock back has no
  // timeout: the call returns only with the lock held again (or with the manager gone), so a
  // caller is never left without the lock while the server hands it over later. A holder
  // whose process dies releases it. FAILED_PRECONDITION ("RuntimeError") when this thread does
  // not hold the lock. Else as every proxy call.
  [[nodiscard]] absl::StatusOr<bool> Wait(absl::Duration timeout = absl::InfiniteDuration()) const {
    MPROC_ASSIGN_OR_RETURN(std::string out,
                           RawWithin(absl::InfiniteDuration(), M::kCondWait,
                                     static_cast<uint64_t>(CurrentTid()), TimeoutNs(timeout)));
    return manager_internal::FromBytes<bool>(out);
  }
  // ConditionProxy::WaitFor(pred, timeout)
  //
  // Python's wait_for: checks pred() here (the caller holds the lock), and Waits until it
  // holds or `timeout` has passed; returns pred()'s last result. Errors: Wait's.
  template <typename Pred>
  [[nodiscard]]
  absl::StatusOr<bool> WaitFor(Pred pred, absl::Duration timeout = absl::InfiniteDuration()) const {
    const absl::Time end = timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                : absl::Now() + timeout;
    bool result = pred();
    while (!result) {
      const absl::Duration left = end - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      MPROC_RETURN_IF_ERROR(Wait(left).status());
      result = pred();
    }
    return result;
  }
  // ConditionProxy::Notify(n), ConditionProxy::NotifyAll()
  //
  // Wakes up to `n` waiters (every one for n < 0 or NotifyAll); they then wait for the lock,
  // which this thread still holds. FAILED_PRECONDITION ("RuntimeError") when this thread does
  // not hold the lock; else as every proxy call.
  absl::Status Notify(int64_t n = 1) const {
    return CallVoid(M::kCondNotify, static_cast<uint64_t>(CurrentTid()), n);
  }
  absl::Status NotifyAll() const { return Notify(-1); }
  // ConditionProxy::lock(): the lock it is over. Never blocks.
  const LockProxy& lock() const { return lock_; }

 private:
  friend struct Codec<ConditionProxy>;
  LockProxy lock_;
};

// A Barrier for `parties` parties in the manager. Wait returns this party's arrival index
// (exactly one gets 0); a broken barrier (Abort, a timeout, a party's client dying while it
// waits) fails every waiter with FAILED_PRECONDITION ("BrokenBarrierError") until Reset.
class BarrierProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;
  // BarrierProxy::Wait(timeout)
  //
  // Waits, parked in the server, until `parties` parties wait; returns this party's arrival
  // index (0 for the first). FAILED_PRECONDITION ("BrokenBarrierError") when the barrier is or
  // becomes broken: Abort, a Reset while parties wait, a waiting party's process dying, or any
  // waiter's timeout passing (it breaks the barrier for all, as Python's). Else as every proxy
  // call.
  [[nodiscard]]
  absl::StatusOr<int64_t> Wait(absl::Duration timeout = absl::InfiniteDuration()) const {
    return Blocking<int64_t>(timeout, M::kBarrierWait, TimeoutNs(timeout));
  }
  // BarrierProxy::Abort(), BarrierProxy::Reset()
  //
  // Abort breaks the barrier: its waiters fail, and so does every Wait until Reset. Reset
  // makes it whole and empty again (parties waiting then fail). Errors as every proxy call.
  absl::Status Abort() const { return CallVoid(M::kBarrierAbort); }
  absl::Status Reset() const { return CallVoid(M::kBarrierReset); }
  // BarrierProxy::Parties(), BarrierProxy::NWaiting(), BarrierProxy::Broken()
  //
  // The barrier's state at the moment of the call (one call each). Errors as every proxy call.
  [[nodiscard]] absl::StatusOr<int64_t> Parties() const { return Field<0, int64_t>(); }
  [[nodiscard]] absl::StatusOr<int64_t> NWaiting() const { return Field<1, int64_t>(); }
  [[nodiscard]] absl::StatusOr<bool> Broken() const { return Field<2, bool>(); }

 private:
  template <size_t I, typename R>
  [[nodiscard]] absl::StatusOr<R> Field() const {
    using State = std::tuple<int64_t, int64_t, bool>;
    MPROC_ASSIGN_OR_RETURN(State s, Call<State>(M::kBarrierState));
    return static_cast<R>(std::get<I>(s));
  }
};

// Results of PoolProxy::IMap and IMapUnordered, taken one at a time (CPython's IMapIterator):
// a window of chunks is in the pool at once, each one call over this process's connection to
// the manager, and the next chunk goes in as a result comes out, so results stream while the
// rest runs. Move-only; one thread at a time.
template <typename R>
class PoolResults {
 public:
  PoolResults(PoolResults&&) noexcept = default;
  PoolResults& operator=(PoolResults&& o) noexcept {
    if (this == &o) return *this;
    AbandonAll();  // this one's calls first
    pid_ = o.pid_;
    ref_ = std::move(o.ref_);
    encode_ = std::move(o.encode_);
    items_ = o.items_;
    chunksize_ = o.chunksize_;
    window_ = o.window_;
    ordered_ = o.ordered_;
    next_ = o.next_;
    flight_ = std::move(o.flight_);
    ready_ = std::move(o.ready_);
    o.ref_ = nullptr;
    o.flight_.clear();
    return *this;
  }
  // Abandons the chunks still in flight: they run to their end in the pool, and their results
  // are dropped as they come.
  ~PoolResults() { AbandonAll(); }

  // PoolResults::Next(timeout)
  //
  // The next result: in input order (IMap), or as chunks complete (IMapUnordered);
  // std::nullopt once every result was taken. An item's own error comes in its place (its
  // task threw: ABORTED with the RemoteError; its worker died: ABORTED naming it) and the
  // others go on; a call that failed (the manager gone: ABORTED) fails every item of its
  // chunk, and so every later one. DEADLINE_EXCEEDED when no result came within `timeout`:
  // nothing is lost, call again. FAILED_PRECONDITION in a fork child: its calls' replies go to
  // the parent's connection (iterate in the process that started it).
  std::optional<absl::StatusOr<R>> Next(absl::Duration timeout = absl::InfiniteDuration()) {
    if (ref_ != nullptr && pid_ != CurrentPid()) {
      return absl::StatusOr<R>(absl::FailedPreconditionError(
          "a PoolResults serves only the process that started it (its calls' replies go there)"));
    }
    const Deadline deadline = Deadline::After(timeout);
    for (;;) {
      Fill();  // a chunk as soon as one left the pool, results taken or not
      if (!ready_.empty()) {
        absl::StatusOr<R> r = std::move(ready_.front());
        ready_.pop_front();
        return r;
      }
      if (flight_.empty()) return std::nullopt;
      // A chunk that could not be sent yields its error in its turn.
      const size_t failed = ordered_ ? (flight_.front().id == 0 ? 0 : SIZE_MAX) : FirstFailed();
      if (failed != SIZE_MAX) {
        ready_.insert(ready_.end(), flight_[failed].count, flight_[failed].error);
        flight_.erase(flight_.begin() + static_cast<ptrdiff_t>(failed));
        continue;
      }
      ids_.clear();
      if (ordered_) {
        ids_.push_back(flight_.front().id);
      } else {
        for (const InFlight& f : flight_) ids_.push_back(f.id);
      }
      auto [id, raw] = ref_->client->AwaitAny(ids_, deadline);
      if (id == 0) {
        if (absl::IsDeadlineExceeded(raw.status())) return absl::StatusOr<R>(raw.status());
        // The manager is gone (the client forgot the calls): every chunk in flight fails
        // with its error.
        for (InFlight& f : flight_) {
          f.id = 0;
          f.error = raw.status();
        }
        continue;
      }
      size_t at = 0;
      while (flight_[at].id != id) ++at;
      const size_t count = flight_[at].count;
      flight_.erase(flight_.begin() + static_cast<ptrdiff_t>(at));
      Decode(raw, count);
    }
  }

 private:
  friend class PoolProxy;
  using Outcome = std::tuple<uint8_t, std::string, std::string>;
  // A chunk's task bytes, by chunk index.
  using Encoder = std::function<std::string(size_t chunk)>;
  struct InFlight {
    uint64_t id = 0;  // 0: not sent, `error` says why
    size_t count = 0;
    absl::Status error;
  };
  PoolResults(std::shared_ptr<manager_internal::ProxyRef> ref, Encoder encode, size_t items,
              size_t chunksize, size_t window, bool ordered)
      : pid_(CurrentPid()),
        ref_(std::move(ref)),
        encode_(std::move(encode)),
        items_(items),
        chunksize_(chunksize),
        window_(window),
        ordered_(ordered) {}
  explicit PoolResults(absl::Status error) { ready_.push_back(std::move(error)); }

  // Sends chunks until `window_` are in flight or none are left.
  void Fill() {
    while (flight_.size() < window_ && next_ * chunksize_ < items_) {
      const size_t begin = next_ * chunksize_;
      InFlight f;
      f.count = std::min(items_, begin + chunksize_) - begin;
      std::vector<std::pair<uint64_t, std::string>> tasks;
      tasks.emplace_back(f.count, encode_(next_));
      ++next_;
      EncodeBuffer b;
      Encode(tasks, b);
      absl::StatusOr<uint64_t> id = manager_internal::BeginMethod(
          ref_, manager_internal::Method::kPoolRun, b, absl::InfiniteDuration());
      if (id.ok()) {
        f.id = *id;
      } else {
        f.error = id.status();
      }
      flight_.push_back(std::move(f));
    }
  }
  void AbandonAll() {
    if (ref_ == nullptr || pid_ != CurrentPid()) return;  // moved from, or a fork child's copy
    for (const InFlight& f : flight_) {
      if (f.id != 0) ref_->client->Abandon(f.id);
    }
    flight_.clear();
  }
  size_t FirstFailed() const {
    for (size_t i = 0; i < flight_.size(); ++i) {
      if (flight_[i].id == 0) return i;
    }
    return SIZE_MAX;
  }
  void Decode(const absl::StatusOr<std::string>& raw, size_t count) {
    absl::StatusOr<std::vector<Outcome>> out =
        raw.ok() ? manager_internal::FromBytes<std::vector<Outcome>>(*raw)
                 : absl::StatusOr<std::vector<Outcome>>(raw.status());
    if (out.ok() && out->size() != 1) out = absl::InternalError("a malformed pool reply");
    if (!out.ok()) {
      ready_.insert(ready_.end(), count, absl::StatusOr<R>(out.status()));
      return;
    }
    const Outcome& o = (*out)[0];
    const absl::Status st(static_cast<absl::StatusCode>(std::get<0>(o)), std::get<1>(o));
    for (auto& item : pool_internal::DecodeChunk<R>(st, AsBytes(std::get<2>(o)), {}, count)) {
      ready_.push_back(std::move(item));
    }
  }

  pid_t pid_ = 0;  // the process that started it
  std::shared_ptr<manager_internal::ProxyRef> ref_;
  Encoder encode_;
  size_t items_ = 0;
  size_t chunksize_ = 1;
  size_t window_ = 1;
  bool ordered_ = true;
  size_t next_ = 0;  // the next chunk to send
  std::deque<InFlight> flight_;
  std::deque<absl::StatusOr<R>> ready_;
  std::vector<uint64_t> ids_;
};

// A Pool living in the manager (CPython's Manager().Pool()): its workers are the server's
// children, so a pool is shared by every process holding the proxy and outlives the one that
// made it. Apply and Map block the caller (not the server) until their tasks are done; tasks
// are functions as for Pool (free functions or captureless lambdas, found by code reference:
// the manager must be the same executable), their arguments and results by codec, and an
// exception a task throws comes back as ABORTED with its RemoteError. Arguments may be
// proxies (each task claims its own reference), not descriptors.
class PoolProxy : public manager_internal::ProxyBase {
  using Outcome = std::tuple<uint8_t, std::string, std::string>;

 public:
  using ProxyBase::ProxyBase;

  // PoolProxy::Apply(fn, args...)
  //
  // Runs fn(args...) in a worker and returns its result; blocks until the task is done, with
  // no timeout (the call is parked in the server meanwhile). ABORTED with a RemoteError when
  // fn throws; ABORTED naming the worker when it dies running the task; UNAVAILABLE when the
  // pool could not replace a dead worker. Else as every proxy call.
  template <typename F, typename... A>
  [[nodiscard]] absl::StatusOr<pool_internal::TaskResult<F>> Apply(F fn, A&&... args) const {
    const pool_internal::TaskFn<F> f = pool_internal::AsFunctionPointer(fn);
    using Traits = pool_internal::TaskTraits<F>;
    using R = pool_internal::TaskResult<F>;
    static_assert(!kTypeCarriesFds<typename Traits::Params>,
                  "a managed Pool's task arguments travel through the manager's socket: no "
                  "descriptors");
    std::vector<std::pair<uint64_t, std::string>> tasks;
    tasks.emplace_back(1, std::string(pool_internal::EncodeCall<Traits>(
                              f, typename Traits::Params(std::forward<A>(args)...))
                                          .view()));
    absl::StatusOr<std::vector<Outcome>> out = Run(tasks);
    if (!out.ok()) return absl::StatusOr<R>(out.status());
    return absl::StatusOr<R>(Items<typename Traits::Result>((*out)[0], 1)[0]);
  }

  // PoolProxy::Map(fn, items, chunksize)
  //
  // fn over `items` in the workers, results in order: the first failed item's status
  // otherwise (errors as Apply's). chunksize 0 picks CPython's default (items /
  // (4 * processes), rounded up), one more call (Processes) to learn it. Blocks until every
  // task is done, with no timeout.
  template <typename F, typename T>
  [[nodiscard]]
  absl::StatusOr<std::vector<pool_internal::TaskResult<F>>> Map(F fn, const std::vector<T>& items,
                                                                size_t chunksize = 0) const {
    const pool_internal::TaskFn<F> f = pool_internal::AsFunctionPointer(fn);
    using Traits = pool_internal::TaskTraits<F>;
    using R = pool_internal::TaskResult<F>;
    static_assert(!kTypeCarriesFds<typename Traits::Params>,
                  "a managed Pool's task arguments travel through the manager's socket: no "
                  "descriptors");
    using Out = absl::StatusOr<std::vector<R>>;
    if (chunksize == 0) {
      absl::StatusOr<int64_t> n = Processes();
      if (!n.ok()) return Out(n.status());
      chunksize = pool_internal::AutoChunksize(items.size(), static_cast<int>(*n));
    }
    std::vector<std::pair<uint64_t, std::string>> tasks;
    for (size_t begin = 0; begin < items.size(); begin += chunksize) {
      const size_t end = std::min(items.size(), begin + chunksize);
      auto chunk = pool_internal::EncodeChunk<Traits, false>(f, items, begin, end);
      tasks.emplace_back(end - begin, std::string(chunk.first.view()));
    }
    absl::StatusOr<std::vector<Outcome>> out = Run(tasks);
    if (!out.ok()) return Out(out.status());
    std::vector<R> results;
    results.reserve(items.size());
    for (size_t t = 0; t < tasks.size(); ++t) {
      for (auto& item : Items<typename Traits::Result>((*out)[t], tasks[t].first)) {
        if (!item.ok()) return Out(item.status());
        results.push_back(*std::move(item));
      }
    }
    return Out(std::move(results));
  }

  // PoolProxy::ApplyAsync(fn, args...), PoolProxy::MapAsync(fn, items, chunksize)
  //
  // Apply and Map without waiting (CPython's apply_async / map_async): the call runs on a
  // thread of this process, over this process's one connection to the manager (calls are
  // multiplexed: others go on meanwhile); the future's Get waits, and its destructor too.
  // The future holds Apply's or Map's result or error.
  template <typename F, typename... A>
  std::future<absl::StatusOr<pool_internal::TaskResult<F>>> ApplyAsync(F fn, A&&... args) const {
    return std::async(std::launch::async,
                      [self = *this, fn, tuple = std::make_tuple(std::decay_t<A>(std::forward<A>(args))...)]() mutable {
                        return std::apply([&](auto&... a) { return self.Apply(fn, std::move(a)...); }, tuple);
                      });
  }
  template <typename F, typename T>
  std::future<absl::StatusOr<std::vector<pool_internal::TaskResult<F>>>> MapAsync(
      F fn, std::vector<T> items, size_t chunksize = 0) const {
    return std::async(std::launch::async, [self = *this, fn, items = std::move(items), chunksize] {
      return self.Map(fn, items, chunksize);
    });
  }

  // PoolProxy::IMap(fn, items, chunksize, window), PoolProxy::IMapUnordered(...)
  //
  // fn over `items` in the workers, results taken one at a time from the returned
  // PoolResults as they come (CPython's imap and imap_unordered): in input order, or in the
  // order chunks complete. `chunksize` items per task (at least 1); `window` chunks in the
  // pool at once (0: twice the pool's workers, one more call to learn them), the next sent as
  // a result is taken, so memory stays bounded and the workers busy. The items are copied in.
  // INVALID_ARGUMENT for a chunksize of 0 comes as the first result; errors per item as
  // PoolResults::Next says.
  template <typename F, typename T>
  PoolResults<pool_internal::TaskResult<F>> IMap(F fn, std::vector<T> items, size_t chunksize = 1,
                                                 size_t window = 0) const {
    return StartIMap(fn, std::move(items), chunksize, window, /*ordered=*/true);
  }
  template <typename F, typename T>
  PoolResults<pool_internal::TaskResult<F>> IMapUnordered(F fn, std::vector<T> items,
                                                          size_t chunksize = 1,
                                                          size_t window = 0) const {
    return StartIMap(fn, std::move(items), chunksize, window, /*ordered=*/false);
  }

  // PoolProxy::Processes()
  //
  // The pool's worker count. Errors as every proxy call.
  [[nodiscard]]
  absl::StatusOr<int64_t> Processes() const { return Call<int64_t>(M::kPoolProcesses); }

 private:
  template <typename F, typename T>
  PoolResults<pool_internal::TaskResult<F>> StartIMap(F fn, std::vector<T> items, size_t chunksize,
                                                      size_t window, bool ordered) const {
    using Traits = pool_internal::TaskTraits<F>;
    using Out = PoolResults<pool_internal::TaskResult<F>>;
    static_assert(!kTypeCarriesFds<typename Traits::Params>,
                  "a managed Pool's task arguments travel through the manager's socket: no "
                  "descriptors");
    if (chunksize == 0) return Out(absl::InvalidArgumentError("chunksize must be at least 1"));
    if (window == 0) {
      absl::StatusOr<int64_t> n = Processes();
      if (!n.ok()) return Out(n.status());
      window = static_cast<size_t>(std::max<int64_t>(1, 2 * *n));
    }
    std::shared_ptr<manager_internal::ProxyRef> cur = ref();
    absl::StatusOr<std::shared_ptr<manager_internal::ProxyRef>> own = manager_internal::OwnRef(cur);
    if (!own.ok()) return Out(own.status());
    const size_t n = items.size();
    const pool_internal::TaskFn<F> f = pool_internal::AsFunctionPointer(fn);
    auto encode = [f, chunksize, items = std::make_shared<std::vector<T>>(std::move(items))](
                      size_t chunk) {
      const size_t begin = chunk * chunksize;
      const size_t end = std::min(items->size(), begin + chunksize);
      return std::string(
          pool_internal::EncodeChunk<Traits, false>(f, *items, begin, end).first.view());
    };
    return Out(*std::move(own), std::move(encode), n, chunksize, window, ordered);
  }
  [[nodiscard]] absl::StatusOr<std::vector<Outcome>> Run(
      const std::vector<std::pair<uint64_t, std::string>>& tasks) const {
    MPROC_ASSIGN_OR_RETURN(std::string raw, Raw(M::kPoolRun, tasks));
    MPROC_ASSIGN_OR_RETURN(std::vector<Outcome> out,
                           manager_internal::FromBytes<std::vector<Outcome>>(raw));
    if (out.size() != tasks.size()) return absl::InternalError("a malformed pool reply");
    return out;
  }
  template <typename R>
  static std::vector<absl::StatusOr<pool_internal::Stored<R>>> Items(const Outcome& o,
                                                                     size_t n) {
    const absl::Status st(static_cast<absl::StatusCode>(std::get<0>(o)), std::get<1>(o));
    return pool_internal::DecodeChunk<R>(st, AsBytes(std::get<2>(o)), {}, n);
  }
};

// An object of your own type T kept in the manager's server (CPython's BaseManager.register):
// made by Manager::Make<T>(constructor arguments...), used through methods that are free
// functions (or captureless lambdas) taking T& first, run in the server one call at a time:
//
//   struct Counter { int64_t n = 0; };
//   int64_t Add(Counter& c, int64_t by) { return c.n += by; }
//   auto counter = m->Make<Counter>().value();
//   int64_t now = counter.Call(Add, 5).value();
//
// A method returning Managed<U>{...} keeps the U in the server and returns an
// ObjectProxy<U> to it (CPython's method_to_typeid). An exception thrown by a method comes
// back as ABORTED with its RemoteError. The server runs your code, so it must be the same
// executable (Start, under any start method); another binary's server refuses the method.
template <typename T>
class ObjectProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;

  // ObjectProxy::Call(fn, args...)
  //
  // Runs fn(object&, args...) in the server, on its one thread (no other client is served
  // until fn returns), and returns fn's result: std::monostate for void, an ObjectProxy<U>
  // for Managed<U>. ABORTED with a RemoteError when fn throws or its arguments do not decode
  // there; INVALID_ARGUMENT when the server is another executable; else as every proxy call.
  template <typename F, typename... A>
  auto Call(F fn, A&&... args) const {
    auto f = +fn;
    using Traits = manager_internal::MethodTraits<decltype(f)>;
    using R = typename Traits::Result;
    static_assert(std::is_same_v<typename Traits::Object, T>,
                  "the method's first parameter must be T& for this ObjectProxy<T>");
    EncodeBuffer b;
    Encode(Traits::kEntry, b);
    Encode(f, b);
    Encode(typename Traits::Args(std::forward<A>(args)...), b);
    absl::StatusOr<std::string> raw = RawBytes(M::kObjectCall, b);
    return Result<R>(raw);
  }

 private:
  template <typename R>
  auto Result(const absl::StatusOr<std::string>& raw) const {
    using Out = std::conditional_t<
        manager_internal::IsManaged<R>::value,
        ObjectProxy<typename manager_internal::IsManaged<
            std::conditional_t<manager_internal::IsManaged<R>::value, R, Managed<int>>>::Inner>,
        std::conditional_t<std::is_void_v<R>, std::monostate, R>>;
    if constexpr (!manager_internal::IsManaged<R>::value) {
      return manager_internal::TaggedValue<Out>(raw);
    } else {
      if (!raw.ok()) return absl::StatusOr<Out>(raw.status());
      DecodeReader r(AsBytes(*raw));
      uint8_t tag = 0;
      if (!Codec<uint8_t>::Decode(r, tag)) return absl::StatusOr<Out>(r.status());
      if (tag == manager_internal::kObjectError) {
        RemoteError e;
        if (!Codec<RemoteError>::Decode(r, e)) return absl::StatusOr<Out>(r.status());
        return absl::StatusOr<Out>(RemoteErrorToStatus(e));
      }
      uint64_t id = 0, fingerprint = 0;
      if (tag != manager_internal::kObjectNew || !Codec<uint64_t>::Decode(r, id) ||
          !Codec<uint64_t>::Decode(r, fingerprint)) {
        return absl::StatusOr<Out>(absl::InternalError("a malformed object reply"));
      }
      // The server already counts the new object as this process's reference.
      auto ref = std::make_shared<manager_internal::ProxyRef>(ref_.load()->mgr, id, fingerprint,
                                                              manager_internal::Kind::kObject);
      ref->pid = CurrentPid();
      ref->client = ref_.load()->client;
      return absl::StatusOr<Out>(Out(std::move(ref)));
    }
  }
};

template <typename K, typename V>
struct Codec<DictProxy<K, V>>
    : manager_internal::ProxyCodec<DictProxy<K, V>, manager_internal::Kind::kDict, K, V> {};
template <typename T>
struct Codec<ListProxy<T>>
    : manager_internal::ProxyCodec<ListProxy<T>, manager_internal::Kind::kList, T> {};
template <>
struct Codec<PoolProxy> : manager_internal::ProxyCodec<PoolProxy, manager_internal::Kind::kPool> {};
template <typename T>
struct Codec<ArrayProxy<T>>
    : manager_internal::ProxyCodec<ArrayProxy<T>, manager_internal::Kind::kArray, T> {};
template <typename T>
struct Codec<SetProxy<T>>
    : manager_internal::ProxyCodec<SetProxy<T>, manager_internal::Kind::kSet, T> {};
template <>
struct Codec<NamespaceProxy>
    : manager_internal::ProxyCodec<NamespaceProxy, manager_internal::Kind::kNamespace> {};
template <typename T>
struct Codec<ValueProxy<T>>
    : manager_internal::ProxyCodec<ValueProxy<T>, manager_internal::Kind::kValue, T> {};
template <typename T>
struct Codec<ObjectProxy<T>>
    : manager_internal::ProxyCodec<ObjectProxy<T>, manager_internal::Kind::kObject, T> {};
// An object of a type registered by name in the server's executable (RegisterType), made by
// Manager::Create("TypeName", args...) and used through methods named by string, from any
// program, built from any sources (CPython's BaseManager.register with `exposed`):
//
//   // In the server's program, at namespace scope (so every image of it registers them):
//   struct Counter { int64_t n = 0; };
//   int64_t Add(Counter& c, int64_t by) { return c.n += by; }
//   const bool kCounter = mproc::RegisterType<Counter>("Counter") &&
//                         mproc::RegisterMethod("Counter", "add", Add);
//   // In any client:
//   auto counter = m->Create("Counter").value();
//   int64_t now = counter.Call<int64_t>("add", int64_t{5}).value();
//
// The arguments and result travel by their codecs and must match the registered method's
// types (arguments the server cannot decode are ABORTED with a decode error from it; a result
// type is not checked: see Call); an unknown type or method is NOT_FOUND. Methods returning
// Managed<U> are for ObjectProxy (same executable) only.
class NamedObjectProxy : public manager_internal::ProxyBase {
 public:
  using ProxyBase::ProxyBase;

  // NamedObjectProxy::Call<R>(method, args...)
  //
  // Runs the method registered as `method` for the object's type in the server, on its one
  // thread, and returns its result as R (void for none: std::monostate). NOT_FOUND when no
  // such method is registered there; ABORTED with a RemoteError when it throws, or when the
  // arguments do not decode as its parameters (or are too many); INTERNAL when its result
  // does not decode as R (a result of another type that happens to decode is not detected).
  // Else as every proxy call.
  template <typename R, typename... A>
  auto Call(std::string_view method, A&&... args) const {
    using Out = std::conditional_t<std::is_void_v<R>, std::monostate, R>;
    EncodeBuffer b;
    Encode(std::string(method), b);
    Encode(std::tuple<std::decay_t<A>...>(std::forward<A>(args)...), b);
    return manager_internal::TaggedValue<Out>(RawBytes(M::kObjectCallNamed, b));
  }

 private:
  friend struct Codec<NamedObjectProxy>;
};

// RegisterType<T, CtorArgs...>(name)
//
// Registers T under `name` in this executable, constructible from arguments of types
// CtorArgs... (each with a Codec). Call at namespace scope, before main: the server is a fresh
// image of the program under spawn and forkserver. Returns true, so it can initialize a
// static; false if `name` is taken. Thread-safe (one mutex for the registry).
template <typename T, typename... CtorArgs>
bool RegisterType(std::string_view name) {
  MutexLock lock(&manager_internal::NamedTypesMutex());
  auto [it, fresh] = manager_internal::NamedTypes().try_emplace(std::string(name));
  if (!fresh) return false;
  it->second.factory = &manager_internal::MakeObject<T, CtorArgs...>;
  return true;
}

// RegisterMethod(type, method, fn)
//
// Registers fn (a free function or captureless lambda taking T& first) as method `method` of
// the type registered as `type`. False if the type is not registered or the method is taken.
// Thread-safe, as RegisterType.
template <typename F>
bool RegisterMethod(std::string_view type, std::string_view method, F fn) {
  auto f = +fn;
  using Traits = manager_internal::MethodTraits<decltype(f)>;
  static_assert(!manager_internal::IsManaged<typename Traits::Result>::value,
                "a method registered by name cannot return Managed<T>");
  MutexLock lock(&manager_internal::NamedTypesMutex());
  auto t = manager_internal::NamedTypes().find(type);
  if (t == manager_internal::NamedTypes().end()) return false;
  return t->second.methods
      .try_emplace(std::string(method),
                   manager_internal::NamedMethod{Traits::kNamedEntry,
                                                 reinterpret_cast<const void*>(f)})
      .second;
}

template <>
struct Codec<NamedObjectProxy> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 1;
  static void Encode(EncodeBuffer& b, const NamedObjectProxy& p) {
    manager_internal::EncodeProxy(b, p.ref_.load());
  }
  static bool Decode(DecodeReader& r, NamedObjectProxy& out) {
    std::shared_ptr<manager_internal::ProxyRef> ref;
    if (!manager_internal::DecodeProxy(r, manager_internal::Kind::kObject,
                                       manager_internal::kAnyNamedFingerprint, &ref)) {
      return false;
    }
    out.ref_.store(std::move(ref));
    return true;
  }
};

template <typename T>
struct Codec<QueueProxy<T>>
    : manager_internal::ProxyCodec<QueueProxy<T>, manager_internal::Kind::kQueue, T> {};
template <typename T>
struct Codec<JoinableQueueProxy<T>>
    : manager_internal::ProxyCodec<JoinableQueueProxy<T>, manager_internal::Kind::kQueue, T> {};
template <>
struct Codec<LockProxy> : manager_internal::ProxyCodec<LockProxy, manager_internal::Kind::kLock> {};
template <>
struct Codec<SemaphoreProxy>
    : manager_internal::ProxyCodec<SemaphoreProxy, manager_internal::Kind::kSemaphore> {};
template <>
struct Codec<EventProxy> : manager_internal::ProxyCodec<EventProxy, manager_internal::Kind::kEvent> {};
template <>
struct Codec<BarrierProxy>
    : manager_internal::ProxyCodec<BarrierProxy, manager_internal::Kind::kBarrier> {};
// A Condition travels with its lock.
template <>
struct Codec<ConditionProxy> {
  static constexpr bool kCarriesFds = false;
  static constexpr size_t kMinSize = 2;
  static void Encode(EncodeBuffer& b, const ConditionProxy& c) {
    manager_internal::ProxyCodec<ConditionProxy, manager_internal::Kind::kCondition>::Encode(b, c);
    ::mproc::Encode(c.lock_, b);
  }
  static bool Decode(DecodeReader& r, ConditionProxy& out) {
    return manager_internal::ProxyCodec<ConditionProxy,
                                        manager_internal::Kind::kCondition>::Decode(r, out) &&
           Codec<LockProxy>::Decode(r, out.lock_);
  }
};

struct ManagerOptions {
  // How the server process starts (default: the process-wide start method).
  std::optional<StartMethod> start_method;
  // Where it listens (default: a Unix socket in a fresh private directory).
  std::optional<Address> address;
  // The key clients authenticate with (default: 32 random bytes).
  std::optional<std::string> authkey;
  // The server's event loop: epoll, or io_uring (a multishot accept, a multishot receive
  // per client into a ring of provided buffers, replies sent as SQEs submitted with the wait:
  // one io_uring_enter per turn of the loop). kAuto takes io_uring unless MPROC_IO_MODE (or
  // SetIoMode) chose plain: it measured faster here in 14 of 15 paired rows (a Dict Set
  // 1.03x on one CPU and across CPUs, 64 clients 1.10x; bench rows mproc.manager.dict_set*).
  // A kernel without provided buffer rings (before 5.19) gets epoll whatever is asked.
  enum class Backend { kAuto, kEpoll, kIoUring };
  Backend backend = Backend::kAuto;
};

class Manager {
 public:
  // Manager::Start(options)
  //
  // Starts the server process and connects to it; its address is known (and served) when
  // this returns. Blocks until the server answers, however long that takes while it lives.
  // Errors: those of making the socket's private directory, of binding the address
  // (Listener::Create: ALREADY_EXISTS when it is taken, ...) and of Process::Start; ABORTED
  // when the server ended before serving, else the connection's error (Proxy calls).
  // Thread-safe.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Manager>> Start(ManagerOptions options = {});
  // Manager::Start(options, initializer, args...)
  //
  // As Start, running initializer(args...) in the server process before it serves (CPython's
  // Manager(initializer=..., initargs=...)): a free function or captureless lambda, its
  // arguments by their codecs. An initializer that throws ends the server, and Start fails
  // saying so (ABORTED; the exception is printed on the server's stderr); Start returns once
  // the initializer has returned and the server answers, however long the initializer runs
  // (CPython's start() waits as long).
  template <typename F, typename... A>
  [[nodiscard]]
  static absl::StatusOr<std::unique_ptr<Manager>> Start(ManagerOptions options, F initializer,
                                                        A&&... args) {
    auto init = +initializer;
    return StartWith(std::move(options), [&](UniqueFd listener,
                                             manager_internal::ServerConfig config) {
      return MakeServer(init, std::move(listener), std::move(config), std::forward<A>(args)...);
    });
  }

  // Manager::Connect(address, authkey, timeout)
  //
  // A manager served elsewhere (Serve, or another program's Start), reached at `address` with
  // `authkey`: proxies made through it live there. Its Shutdown and destructor leave the
  // server running (CPython's connect). Blocks to connect (as Client) and for a hello: up to
  // `timeout` for the handshake and for each half of the hello. Errors: UNAVAILABLE when it
  // cannot connect (nothing listens there, no socket file, a bad address), UNAUTHENTICATED
  // for a wrong key (or a handshake not done within `timeout`), INVALID_ARGUMENT when the
  // peer is not an mproc manager, else the hello's send or receive error (DEADLINE_EXCEEDED,
  // ...). Thread-safe.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Manager>> Connect(
      const Address& address, std::string authkey, absl::Duration timeout = absl::Seconds(30));

  // Manager::Serve(address, authkey, on_listening, stop)
  //
  // Serves a manager in this process, on the calling thread (CPython's
  // get_server().serve_forever()): standalone, it does not end with any other process.
  // `on_listening` (optional) is called with the bound address (a TCP port 0 becomes the real
  // one) once clients can connect. Over TCP, bind to 127.0.0.1 unless the network is meant to
  // reach it; connections get keepalive probes and a user timeout, so a peer that vanished
  // with the network is dropped. It returns OK once `stop` is requested (from another thread:
  // std::stop_source::request_stop, or a std::jthread's stop; a program that wants Ctrl-C to
  // stop it waits for SIGINT with sigwait on a thread of its own and requests the stop there),
  // or on a client's shutdown request. Then, as a Manager's Shutdown does: the shared memory
  // it made is unlinked, its objects are dropped, the replies already written go out, the
  // connections close (clients' later calls fail ABORTED), and a Unix socket file is removed.
  // A process killed while serving leaves that file behind. Errors: Listener::Create's
  // (INVALID_ARGUMENT, ALREADY_EXISTS, ...); INTERNAL if the loop fails.
  static absl::Status Serve(const Address& address, std::string authkey,
                           std::function<void(const Address&)> on_listening = nullptr,
                           std::stop_token stop = {});
  // Manager::~Manager()
  //
  // Shutdown() with its default timeout, in the process that made this Manager (a fork
  // child's copy does nothing); a Connect-ed manager's server serves on.
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Manager::Shutdown(timeout)
  //
  // Asks the server to end, waits, then SIGTERM, then SIGKILL: up to `timeout` for the
  // request's answer, `timeout` more for the exit, then about a second after SIGTERM. Removes
  // a Unix socket file (and the default address's directory). Calls from this process
  // afterwards are FAILED_PRECONDITION (this Manager's and its proxies'; a call in flight on
  // another thread fails with ABORTED or FAILED_PRECONDITION); other processes' are ABORTED.
  // A Connect-ed manager's Shutdown only makes this Manager's own calls FAILED_PRECONDITION:
  // its proxies and the server go on. Idempotent; OK and nothing done in another process than
  // the one that made this Manager. Returns OK once the server is gone (killed if need be),
  // barring an error of Process::Join. Must not race other calls on this Manager.
  absl::Status Shutdown(absl::Duration timeout = absl::Seconds(5));

  // ---- The factories: Dict, List, Array, Set, Namespace, Value, Queue, JoinableQueue, Lock,
  // RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier, Pool, Create, Make ----
  //
  // Each makes one object in the server and returns a proxy holding this process's reference
  // to it (the object lives while a proxy, a proxy in flight or a container holds it): one
  // call, blocking until the server answers, with no timeout. Errors: FAILED_PRECONDITION
  // after Shutdown, or in another process than the one that made this Manager (a fork child's
  // copy: use proxies there); the connection's errors, as for every proxy call (ABORTED when
  // the server is gone; for a Connect-ed manager, UNAVAILABLE / UNAUTHENTICATED when it cannot
  // be reached, FAILED_PRECONDITION when it was restarted); and each factory's own. Initial
  // values are encoded here. Thread-safe, but not concurrently with Shutdown.

  // Manager::Dict<K, V>(initial)
  //
  // A dict holding `initial`'s items (in order; a later duplicate key wins, as Python's).
  // Errors: the factories'.
  template <typename K, typename V>
  [[nodiscard]]
  absl::StatusOr<DictProxy<K, V>> Dict(const std::vector<std::pair<K, V>>& initial = {}) {
    std::string init;
    if (!initial.empty()) {
      std::vector<std::pair<std::string, std::string>> raw;
      raw.reserve(initial.size());
      for (const auto& [k, v] : initial) {
        raw.emplace_back(Enc(k), Enc(v));
      }
      init = manager_internal::ToBytes(raw);
    }
    return MakeProxy<DictProxy<K, V>>(manager_internal::Kind::kDict,
                                      manager_internal::Fingerprint<K, V>(), init);
  }
  // Manager::List<T>(initial)
  //
  // A list holding `initial`. Errors: the factories'.
  template <typename T>
  [[nodiscard]] absl::StatusOr<ListProxy<T>> List(const std::vector<T>& initial = {}) {
    return MakeProxy<ListProxy<T>>(manager_internal::Kind::kList,
                                   manager_internal::Fingerprint<T>(), Many(initial));
  }
  // Manager::Array<T>(values), Manager::Array<T>(n)
  //
  // A fixed-size array of `values` (CPython's Array(typecode, sequence)); Array<T>(n) is n
  // value-initialised elements. Errors: the factories'.
  template <typename T>
  [[nodiscard]] absl::StatusOr<ArrayProxy<T>> Array(const std::vector<T>& values) {
    return MakeProxy<ArrayProxy<T>>(manager_internal::Kind::kArray,
                                    manager_internal::Fingerprint<T>(), Many(values));
  }
  template <typename T>
  [[nodiscard]] absl::StatusOr<ArrayProxy<T>> Array(size_t n) {
    return Array<T>(std::vector<T>(n));
  }
  // Manager::Set<T>(initial)
  //
  // A set of `initial`'s distinct elements (by encoded bytes). Errors: the factories'.
  template <typename T>
  [[nodiscard]] absl::StatusOr<SetProxy<T>> Set(const std::vector<T>& initial = {}) {
    return MakeProxy<SetProxy<T>>(manager_internal::Kind::kSet, manager_internal::Fingerprint<T>(),
                                  Many(initial));
  }
  // Manager::Namespace()
  //
  // An empty namespace. Errors: the factories'.
  [[nodiscard]] absl::StatusOr<NamespaceProxy> Namespace() {
    return MakeProxy<NamespaceProxy>(manager_internal::Kind::kNamespace,
                                     manager_internal::Fingerprint<>(), "");
  }
  // Manager::Value<T>(initial)
  //
  // A value holding `initial`. Errors: the factories'.
  template <typename T>
  [[nodiscard]] absl::StatusOr<ValueProxy<T>> Value(const T& initial = T()) {
    return MakeProxy<ValueProxy<T>>(manager_internal::Kind::kValue,
                                    manager_internal::Fingerprint<T>(), Enc(initial));
  }

  // Manager::Queue<T>(maxsize), Manager::JoinableQueue<T>(maxsize)
  //
  // A queue of at most `maxsize` items (0: unbounded), joinable or not. Errors: the
  // factories'.
  template <typename T>
  [[nodiscard]] absl::StatusOr<QueueProxy<T>> Queue(uint64_t maxsize = 0) {
    return MakeProxy<QueueProxy<T>>(manager_internal::Kind::kQueue,
                                    manager_internal::Fingerprint<T>(),
                                    manager_internal::ToBytes(std::make_tuple(maxsize, false)));
  }
  template <typename T>
  [[nodiscard]] absl::StatusOr<JoinableQueueProxy<T>> JoinableQueue(uint64_t maxsize = 0) {
    return MakeProxy<JoinableQueueProxy<T>>(
        manager_internal::Kind::kQueue, manager_internal::Fingerprint<T>(),
        manager_internal::ToBytes(std::make_tuple(maxsize, true)));
  }
  // Manager::Lock(), Manager::RLock()
  //
  // A lock, free (see LockProxy). Errors: the factories'.
  [[nodiscard]] absl::StatusOr<LockProxy> Lock() { return MakeLock(false); }
  [[nodiscard]] absl::StatusOr<LockProxy> RLock() { return MakeLock(true); }
  // Manager::Semaphore(value), Manager::BoundedSemaphore(value)
  //
  // A semaphore of `value` units; a bounded one refuses releases past `value`.
  // INVALID_ARGUMENT when `value` < 0; else the factories' errors.
  [[nodiscard]] absl::StatusOr<SemaphoreProxy> Semaphore(int64_t value = 1) { return MakeSemaphore(value, false); }
  [[nodiscard]] absl::StatusOr<SemaphoreProxy> BoundedSemaphore(int64_t value = 1) {
    return MakeSemaphore(value, true);
  }
  // Manager::Event()
  //
  // An event, clear. Errors: the factories'.
  [[nodiscard]] absl::StatusOr<EventProxy> Event() {
    return MakeProxy<EventProxy>(manager_internal::Kind::kEvent, manager_internal::Fingerprint<>(),
                                 "");
  }
  // Manager::Condition(lock)
  //
  // A condition over `lock`, a Lock or RLock of this manager, or over a new RLock when none
  // is given (one more call); it holds its lock while it lives. INVALID_ARGUMENT when the
  // server finds no lock of this process under `lock`'s id; FAILED_PRECONDITION for an empty
  // `lock`; else the factories' errors.
  [[nodiscard]]
  absl::StatusOr<ConditionProxy> Condition(std::optional<LockProxy> lock = std::nullopt);
  // Manager::Barrier(parties)
  //
  // A barrier for `parties` parties. INVALID_ARGUMENT when `parties` < 1; else the
  // factories' errors.
  [[nodiscard]] absl::StatusOr<BarrierProxy> Barrier(int64_t parties) {
    return MakeProxy<BarrierProxy>(manager_internal::Kind::kBarrier,
                                   manager_internal::Fingerprint<>(),
                                   manager_internal::ToBytes(parties));
  }

  // Manager::Pool(processes, start_method)
  //
  // A Pool in the server with `processes` workers (0: the server's CPUs), started with
  // `start_method` (default: the process-wide one). See PoolProxy. The server starts the
  // workers before it answers, serving no other call meanwhile. INVALID_ARGUMENT for
  // `processes` < 0, a worker's start error, else the factories' errors.
  [[nodiscard]] absl::StatusOr<PoolProxy> Pool(int processes = 0,
                                 std::optional<StartMethod> start_method = std::nullopt) {
    MPROC_ASSIGN_OR_RETURN(
        auto ref, Create(manager_internal::Kind::kPool, manager_internal::Fingerprint<>(),
                         manager_internal::ToBytes(
                             std::make_tuple(static_cast<int64_t>(processes), start_method))));
    return PoolProxy(std::move(ref));
  }

  // Manager::Create(type_name, args...)
  //
  // An object of a type registered by name in the server's executable (RegisterType), built
  // there from `args`. NOT_FOUND for a name the server does not know; INVALID_ARGUMENT when
  // `args` do not decode as the registered constructor's arguments or the constructor
  // throws; else the factories' errors. See NamedObjectProxy.
  template <typename... A>
  [[nodiscard]] absl::StatusOr<NamedObjectProxy> Create(std::string_view type_name, A&&... args) {
    static_assert((!kTypeCarriesFds<std::decay_t<A>> && ...),
                  "a Manager keeps values as bytes: a constructor argument cannot carry "
                  "descriptors (SharedBytes, UniqueFd)");
    EncodeBuffer init;
    Encode(std::string(type_name), init);
    Encode(std::tuple<std::decay_t<A>...>(std::forward<A>(args)...), init);
    MPROC_ASSIGN_OR_RETURN(
        auto ref, Create(manager_internal::Kind::kNamedObject,
                         manager_internal::NamedFingerprint(type_name),
                         std::string(reinterpret_cast<const char*>(init.bytes().data()),
                                     init.size())));
    return NamedObjectProxy(std::move(ref));
  }

  // Manager::Make<T>(args...)
  //
  // An object of your own type in the server, built there from `args` (its constructor's
  // arguments, each with a Codec). INVALID_ARGUMENT when the constructor throws (its what()
  // in the message) or the server is another executable; else the factories' errors. See
  // ObjectProxy.
  template <typename T, typename... A>
  [[nodiscard]] absl::StatusOr<ObjectProxy<T>> Make(A&&... args) {
    static_assert((!kTypeCarriesFds<std::decay_t<A>> && ...),
                  "a Manager keeps values as bytes: a constructor argument cannot carry "
                  "descriptors (SharedBytes, UniqueFd)");
    EncodeBuffer init;
    Encode(&manager_internal::MakeObject<T, std::decay_t<A>...>, init);
    Encode(std::tuple<std::decay_t<A>...>(std::forward<A>(args)...), init);
    MPROC_ASSIGN_OR_RETURN(
        auto ref, Create(manager_internal::Kind::kObject, manager_internal::Fingerprint<T>(),
                         std::string(reinterpret_cast<const char*>(init.bytes().data()),
                                     init.size())));
    return ObjectProxy<T>(std::move(ref));
  }

  // Manager::CreateSharedMemory(size, eager)
  //
  // CPython's SharedMemoryManager.SharedMemory(size): a named segment (shm/shared_memory.h)
  // created by the server, attached here; pass it, or its name, to other processes. The server
  // unlinks every segment it made when it shuts down (views stay valid; the memory goes with
  // the last one). If the server dies instead, a segment is reclaimed once no process has it
  // attached. `eager` reserves the pages now (RESOURCE_EXHAUSTED when the tmpfs is full). One
  // call, no timeout. Errors: INVALID_ARGUMENT for size 0, else SharedMemory::Create's (in
  // the server) and Attach's (here), and the factories' errors.
  [[nodiscard]]
  absl::StatusOr<mproc::SharedMemory> CreateSharedMemory(size_t size, bool eager = false);

  // Manager::ObjectCount()
  //
  // Objects alive in the server (every client's): 0 once every proxy is gone (an object held
  // only by a proxy in flight or a fork child's lease counts until it is claimed, at most
  // 60 s). One call, no timeout; errors as the factories'.
  [[nodiscard]] absl::StatusOr<uint64_t> ObjectCount();
  // Manager::address(), Manager::authkey(), Manager::pid()
  //
  // Where the server listens (after Start, a TCP port 0 as bound), the key clients
  // authenticate with, and the server's pid (for Connect, as the server reported it). Never
  // block; thread-safe.
  const Address& address() const { return ref_.address; }
  const std::string& authkey() const { return ref_.authkey; }
  pid_t pid() const { return ref_.server_pid; }

 private:
  Manager() = default;
  using ServerFactory =
      std::function<std::shared_ptr<Process>(UniqueFd, manager_internal::ServerConfig)>;
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Manager>> StartWith(ManagerOptions options,
                                                            const ServerFactory& make_server);
  template <typename... P, typename... A>
  static std::shared_ptr<Process> MakeServer(void (*init)(P...), UniqueFd listener,
                                             manager_internal::ServerConfig config, A&&... args) {
    return std::make_shared<Process>(&manager_internal::ServeManagerAfter<P...>,
                                     std::move(listener), std::move(config), init,
                                     std::tuple<std::decay_t<P>...>(std::forward<A>(args)...));
  }
  [[nodiscard]]
  absl::StatusOr<std::shared_ptr<manager_internal::ProxyRef>> Create(manager_internal::Kind kind,
                                                                     uint64_t fingerprint,
                                                                     const std::string& initial);
  // Create, and a proxy of type P naming the new object.
  template <typename P>
  absl::StatusOr<P> MakeProxy(manager_internal::Kind kind, uint64_t fingerprint,
                              const std::string& initial) {
    MPROC_ASSIGN_OR_RETURN(auto ref, Create(kind, fingerprint, initial));
    return P(std::move(ref));
  }
  absl::Status CheckRunning() const;
  // Values kept in this manager (manager_internal::ToBytesIn).
  template <typename T>
  std::string Enc(const T& v) const {
    return manager_internal::ToBytesIn(ref_.nonce, v);
  }
  template <typename T>
  std::vector<std::string> EncEach(const std::vector<T>& vs) const {
    return manager_internal::ToEachIn(ref_.nonce, vs);
  }
  // A container's initial elements ("" for none).
  template <typename T>
  std::string Many(const std::vector<T>& values) const {
    return values.empty() ? std::string() : Enc(EncEach(values));
  }
  [[nodiscard]] absl::StatusOr<LockProxy> MakeLock(bool recursive) {
    return MakeProxy<LockProxy>(manager_internal::Kind::kLock, manager_internal::Fingerprint<>(),
                                manager_internal::ToBytes(recursive));
  }
  [[nodiscard]] absl::StatusOr<SemaphoreProxy> MakeSemaphore(int64_t value, bool bounded) {
    return MakeProxy<SemaphoreProxy>(manager_internal::Kind::kSemaphore,
                                     manager_internal::Fingerprint<>(),
                                     manager_internal::ToBytes(std::make_tuple(value, bounded)));
  }

  manager_internal::ManagerRef ref_;
  std::shared_ptr<Process> server_;
  std::string socket_dir_;  // ours to remove (the default address)
  pid_t owner_pid_ = 0;
  bool shut_down_ = false;
  bool connected_ = false;  // Connect: the server is someone else's
};

// CPython's SharedMemoryManager: every Manager makes shared memory (CreateSharedMemory).
using SharedMemoryManager = Manager;

}  // namespace mproc

#endif  // MPROC_MANAGER_MANAGER_H_
