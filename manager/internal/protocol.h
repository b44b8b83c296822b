// manager/internal/protocol.h — the messages between a Manager's clients and its server.
//
// A connection is a stream socket (Unix or TCP) that starts with CPython's authkey handshake
// (serialize/auth.h) and then carries messages in CPython's length framing: a 4-byte
// big-endian length and the payload (serialize/cpython_framing.h). Every payload is mproc
// codec bytes:
//
//   request:  u64 call_id, u8 op, u64 object, then the op's arguments
//   reply:    u64 call_id, u8 status code (absl::StatusCode), then the result bytes, or the
//             error message when the code is not OK
//
// call_id 0 marks a one-way request (decref, ticket): the server sends no reply. Replies come
// in the order of their requests on a connection; the call id lets a client drop a late reply
// (a call that timed out) instead of taking it for the next one.
//
// Values are codec bytes the server never decodes: it needs none of the user's types, so a
// client built from another binary can use it. Keys compare by their encoded bytes (codecs are
// canonical). Every object records a fingerprint of its element types, which a proxy decoded
// in another process checks when it claims the object.
#ifndef MPROC_MANAGER_INTERNAL_PROTOCOL_H_
#define MPROC_MANAGER_INTERNAL_PROTOCOL_H_

#include <cstdint>
#include <string_view>
#include <initializer_list>
#include <string>
#include <typeinfo>

namespace mproc::manager_internal {

enum class Op : uint8_t {
  kCreate = 1,    // args: u8 kind, u64 fingerprint, bytes initial → u64 object (one reference)
  kCall = 2,      // object, args: u16 method, the method's arguments → its result
  kDecref = 3,    // one-way: the connection drops one reference to `object`
  kTicket = 4,    // one-way: args u64 ticket: a reference held for a proxy in flight
  kClaim = 5,     // args: u64 ticket, u64 fingerprint, u8 kind (older clients: none) → the
                  // ticket's reference becomes ours
  kCount = 6,     // → u64 live objects (tests: the count returns to zero)
  kShutdown = 7,  // → OK, then the server exits
  kHello = 8,     // → the server's instance nonce (u64) and pid (i32)
  kIncref = 9,    // object, args: u64 fingerprint → a reference for this connection (a fork
                  // child's first use of a proxy it inherited); NOT_FOUND when it is gone
  kForkLease = 10,  // one-way, args: u64 token: sent just before this process forks; one more
                    // reference to every object the connection holds, for the child to claim
  kClaimFork = 11,  // args: u64 token → vector<u64> objects now referenced by this connection
  kShmCreate = 12,  // args: u64 size, bool eager → string name of a SharedMemory segment the
                    // server created and unlinks when it shuts down (SharedMemoryManager)
};

enum class Kind : uint8_t {
  kDict = 1,
  kList = 2,
  kNamespace = 3,
  kValue = 4,
  kQueue = 5,      // initial: (u64 maxsize, bool joinable)
  kLock = 6,       // initial: (bool recursive)
  kSemaphore = 7,  // initial: (i64 value, bool bounded)
  kEvent = 8,      // initial: nothing
  kCondition = 9,  // initial: (u64 lock object, which the creating client holds)
  kBarrier = 10,   // initial: (i64 parties)
  kObject = 11,    // initial: (ObjectFactory code reference, its arguments): a user type
  kArray = 12,     // initial: vector<bytes>; a fixed-size list (the kList methods that keep size)
  kSet = 13,       // initial: vector<bytes>
  kPool = 14,      // initial: (i64 processes, optional<StartMethod>): a Pool in the server
  // initial: (string type name, its constructor's arguments): a user type registered by name
  // in the server's executable (RegisterType); kept as a kObject.
  kNamedObject = 15,
};
inline constexpr uint8_t kLastKind = 15;
// A Dict's initial: vector<pair<bytes, bytes>>; a List's: vector<bytes>; empty: none.

// Methods of kCall, per kind. Arguments and results are codec bytes of the listed types,
// with `bytes` a std::string holding one encoded key or value.
enum class Method : uint16_t {
  // Dict
  kDictSet = 1,         // (bytes key, bytes value)
  kDictGet = 2,         // (bytes key) → bytes value; NOT_FOUND (KeyError)
  kDictContains = 3,    // (bytes key) → bool
  kDictDel = 4,         // (bytes key); NOT_FOUND
  kDictLen = 5,         // → u64
  kDictKeys = 6,        // → vector<bytes>, in insertion order
  kDictValues = 7,      // → vector<bytes>
  kDictItems = 8,       // → vector<pair<bytes, bytes>>
  kDictClear = 9,       //
  kDictPop = 10,        // (bytes key) → bytes value; NOT_FOUND
  kDictSetDefault = 11, // (bytes key, bytes value) → bytes value now stored
  kDictUpdate = 12,     // (vector<pair<bytes, bytes>>)
  // (bytes key, optional<bytes> expected, bytes desired) → bool stored: the value under key is
  // replaced only if its bytes equal `expected` (nullopt: only if the key is absent)
  kDictCompareSet = 13,
  // (bytes key, BytesEntry code reference, the method's code reference, arguments) → the
  // method's tagged result (objects.h); NOT_FOUND when the key is absent
  kDictApply = 14,
  // List
  kListAppend = 20,   // (bytes)
  kListExtend = 21,   // (vector<bytes>)
  kListGet = 22,      // (i64 index, negative from the end) → bytes; OUT_OF_RANGE (IndexError)
  kListSet = 23,      // (i64 index, bytes)
  kListLen = 24,      // → u64
  kListPop = 25,      // (i64 index) → bytes
  kListInsert = 26,   // (i64 index, bytes), index clamped as Python's insert
  kListRemove = 27,   // (bytes) first equal; NOT_FOUND (ValueError)
  kListIndex = 28,    // (bytes) → u64; NOT_FOUND
  kListCount = 29,    // (bytes) → u64
  kListReverse = 30,  //
  kListClear = 31,    //
  kListSlice = 32,    // (i64 start, i64 stop) Python's clamping, step 1 → vector<bytes>
  kListAll = 33,      // → vector<bytes>
  // (i64 start, i64 stop, vector<bytes>) Python's l[start:stop] = values (an Array: the same
  // number of values as the slice holds, or INVALID_ARGUMENT)
  kListSetSlice = 34,
  kListRepeat = 35,   // (i64 n) Python's l *= n; RESOURCE_EXHAUSTED past 1 GiB (MemoryError)
  // Value
  kValueGet = 40,  // → bytes
  kValueSet = 41,  // (bytes)
  kValueApply = 42,  // (BytesEntry, method, arguments) → the method's tagged result
  // Namespace
  kNsGet = 50,    // (string name) → bytes; NOT_FOUND (AttributeError)
  kNsSet = 51,    // (string name, bytes)
  kNsDel = 52,    // (string name); NOT_FOUND
  kNsNames = 53,  // → vector<string>, sorted
  // Blocking calls take an i64 timeout in ns: -1 waits as long as it takes, 0 never waits. The
  // server parks them (its loop never blocks) and answers when they can go on or the timeout
  // passes; a parked call of a client that dies goes with it.
  // Queue
  kQueuePut = 60,       // (bytes, i64 timeout) ; RESOURCE_EXHAUSTED full (0), DEADLINE_EXCEEDED
  kQueueGet = 61,       // (i64 timeout) → bytes ; UNAVAILABLE empty (0), DEADLINE_EXCEEDED
  kQueueSize = 62,      // → u64
  kQueueEmpty = 63,     // → bool
  kQueueFull = 64,      // → bool
  kQueueTaskDone = 65,  // ; FAILED_PRECONDITION called too many times
  kQueueJoin = 66,      // (i64 timeout) ; DEADLINE_EXCEEDED
  // Lock / RLock: the owner is (connection, u64 thread id)
  kLockAcquire = 70,  // (u64 tid, i64 timeout) → (bool acquired, bool previous owner died)
  kLockRelease = 71,  // (u64 tid) ; FAILED_PRECONDITION unlocked, or an RLock not ours
  kLockLocked = 72,   // → bool
  // Semaphore / BoundedSemaphore
  kSemAcquire = 80,  // (i64 timeout) → bool
  kSemRelease = 81,  // (i64 n) ; FAILED_PRECONDITION past a bounded one's initial value
  kSemValue = 82,    // → i64
  // Event
  kEventSet = 90,
  kEventClear = 91,
  kEventIsSet = 92,  // → bool
  kEventWait = 93,   // (i64 timeout) → bool
  // Condition (its lock's methods are called on the lock object)
  kCondWait = 100,    // (u64 tid, i64 timeout) → bool notified ; FAILED_PRECONDITION not held
  kCondNotify = 101,  // (u64 tid, i64 n) ; FAILED_PRECONDITION not held
  // Barrier
  kBarrierWait = 110,     // (i64 timeout) → i64 index ; FAILED_PRECONDITION "BrokenBarrierError"
  kBarrierAbort = 111,
  kBarrierReset = 112,
  kBarrierState = 113,    // → (i64 parties, i64 waiting, bool broken)
  // Set (CPython 3.14's SetProxy), elements by encoded bytes
  kSetAdd = 140,       // (bytes) → bool added
  kSetDiscard = 141,   // (bytes) → bool removed
  kSetRemove = 142,    // (bytes) ; NOT_FOUND (KeyError)
  kSetPop = 143,       // → bytes ; NOT_FOUND (KeyError) when empty
  kSetContains = 144,  // (bytes) → bool
  kSetLen = 145,       // → u64
  kSetAll = 146,       // → vector<bytes>, ordered by encoded bytes
  kSetClear = 147,
  kSetUpdate = 148,    // (vector<bytes>)
  // Pool: the server runs tasks it cannot read. (vector<pair<u64 items, bytes task>>) → once
  // every task is done, vector<tuple<u8 status code, string message, bytes output>>: each
  // task is a Pool task as pool/ encodes it (its entry, function and arguments, for the
  // workers), and each output the worker's, decoded by the client.
  kPoolRun = 150,
  kPoolProcesses = 151,  // → i64
  // A user-type object: (ObjectEntry code reference, the method's code reference, arguments)
  // → the entry's tagged output (manager/internal/objects.h)
  kObjectCall = 120,
  // A user-type object registered by name: (string method name, arguments) → as kObjectCall
  kObjectCallNamed = 121,
};

// A proxy kept inside a managed value (a Dict of Lists, a List holding a Queue proxy) is encoded
// with a stamp the server finds in the bytes it keeps: four little-endian u64s, kEmbedMagic,
// the server's nonce, the object id and a ticket slot. Each stamp in a kept value is one
// reference to its object, held for as long as the value is kept (the server recounts a
// container's stamps after every call that may change them). The slot is 0 as stored; in a
// reply, the server fills it with a fresh ticket (a reference for 60 s) that the reader's
// decode claims, so any number of processes can read the same nested proxy.
inline constexpr uint64_t kEmbedMagic = 0x9e3779b97f4a7c15ull ^ 0x6d70726f63707879ull;
inline constexpr size_t kStampSize = 32;

// The fingerprint of a list of element types (FNV-1a of their type names): a proxy to a
// Dict<std::string, int> decoded as a Dict<int, int> is refused when claimed.
template <typename... T>
uint64_t Fingerprint() {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const char* name : std::initializer_list<const char*>{typeid(T).name()...}) {
    for (const char* p = name; *p != '\0'; ++p) {
      h ^= static_cast<unsigned char>(*p);
      h *= 0x100000001b3ULL;
    }
    h ^= 0xff;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// The fingerprint of an object made by type name (its proxies carry no C++ type).
inline uint64_t NamedFingerprint(std::string_view name) {
  uint64_t h = 0x84222325cbf29ce4ULL;
  for (char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

// What a NamedObjectProxy decodes with (it carries no type): any object made by name.
inline constexpr uint64_t kAnyNamedFingerprint = 0x6e616d65642a2a2aULL;

// On a TCP connection (nothing on a Unix one): keepalive probes after 30 s idle and a user
// timeout of 60 s, so a peer that vanished with its network is noticed and dropped.
void TuneTcp(int fd);

// Largest message either side accepts; a longer claim closes the connection (the server) or
// fails the call (a client), before anything that size is allocated.
inline constexpr uint64_t kMaxMessage = 256ull << 20;
// Room for a request's or reply's own fields (call id, op, object, code) before its body.
inline constexpr uint64_t kMaxRequestHeader = 64;

// The message at the front of `bytes` (received, not yet taken), in CPython's framing:
// kWhole when its header and body are all there, with `len` its body's length; kNeedMore
// before (`len` too once the header is there, else 0); kTooLong when the header announces
// more than kMaxMessage (the 8-byte form announces more than 2 GiB, so it is too long too).
struct FrameAt {
  enum State { kNeedMore, kWhole, kTooLong } state;
  size_t len;
};
inline FrameAt PeekFrame(std::string_view bytes) {
  if (bytes.size() < 4) return {FrameAt::kNeedMore, 0};
  const auto* h = reinterpret_cast<const unsigned char*>(bytes.data());
  const int32_t len32 = static_cast<int32_t>((uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) |
                                             (uint32_t{h[2]} << 8) | uint32_t{h[3]});
  if (len32 < 0 || static_cast<uint64_t>(len32) > kMaxMessage) return {FrameAt::kTooLong, 0};
  const size_t len = static_cast<size_t>(len32);
  return {bytes.size() - 4 >= len ? FrameAt::kWhole : FrameAt::kNeedMore, len};
}

}  // namespace mproc::manager_internal

#endif  // MPROC_MANAGER_INTERNAL_PROTOCOL_H_
