// sync/value.h — Value<T> and Array<T>: typed shared memory with an optional lock
// (CPython's multiprocessing.Value / Array / RawValue / RawArray, SHV-1..5).
//
//   MPROC_ASSIGN_OR_RETURN(Value<int> counter, Value<int>::Create(0));
//   { RLockGuard g(counter.GetLock()); counter.Set(counter.Get() + 1); }
//   counter.FetchAdd(1);                       // lock-free, for integral T
//
//   MPROC_ASSIGN_OR_RETURN(Array<double> a, Array<double>::Create(1000));   // zero-filled
//   a[3] = 1.5;  std::span<double> s = a.Slice(10, 20);
//
// T must be trivially copyable (it lives in shared memory, copied byte-wise between
// processes). By default the value carries a new RLock (GetLock(), as CPython's lock=True);
// LockMode::kNone makes a RawValue/RawArray (no lock; HasLock() is false and GetLock() must not
// be called). Get()/Set() do not lock by themselves (CPython's `.value` on a synchronized
// wrapper does): take GetLock() around read-modify-write sequences, or use the atomic
// operations for integral T.
//
// Placement: the value (and its lock) live in one sealed memfd segment; every handle copy and
// every fork child sees the same memory. Thread-safety: handles are thread-safe to copy; the
// data is as safe as the locking you use.

#ifndef MPROC_SYNC_VALUE_H_
#define MPROC_SYNC_VALUE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>

#include "absl/status/statusor.h"
#include "sync/lock.h"

namespace mproc {

enum class LockMode { kRLock, kNone };

template <typename T>
class Value;
template <typename T>
class Array;

namespace sync_internal {
template <typename H>
struct ValueCodec;
// Layout of a value's segment: the lock state, then the data, aligned.
template <typename T>
struct ValueLayout {
  static constexpr size_t kDataOffset =
      (sizeof(LockState) + alignof(T) - 1) / alignof(T) * alignof(T);
};
}  // namespace sync_internal

template <typename T>
class Value {
  static_assert(std::is_trivially_copyable_v<T>, "Value<T> needs a trivially copyable T");
  static_assert(alignof(T) <= 64,
                "Value<T>: shared objects are 64-byte aligned; T may not need more");

 public:
  // An empty handle, to decode into; any other use is undefined.
  Value() = default;

  // Value<T>::Create(initial, mode)
  //
  // A new shared T holding `initial`, with a new RLock unless mode is kNone (RawValue). Placed
  // in this process's shared arena as a Lock is; errors as Lock::Create (RESOURCE_EXHAUSTED,
  // or a failed call's errno status). Thread-safe.
  [[nodiscard]]
  static absl::StatusOr<Value> Create(const T& initial = T{}, LockMode mode = LockMode::kRLock) {
    auto r = sync_internal::AllocateShared(
        sync_internal::ValueLayout<T>::kDataOffset + sizeof(T), "mproc-value");
    if (!r.ok()) return r.status();
    char* base = r->second;
    auto* lock = new (base) sync_internal::LockState();
    T* data = reinterpret_cast<T*>(base + sync_internal::ValueLayout<T>::kDataOffset);
    std::memcpy(static_cast<void*>(data), &initial, sizeof(T));
    Value v(r->first, data);
    if (mode == LockMode::kRLock) v.lock_.emplace(RLock(r->first, lock));
    return v;
  }

  // Value<T>::Get(), Value<T>::Set(v): a byte copy out of or into the shared T. They take no
  // lock and are not atomic: a Get racing a Set in any process may see a torn value. Never
  // block; no error.
  T Get() const {
    T out;
    std::memcpy(&out, data_, sizeof(T));
    return out;
  }
  void Set(const T& v) { std::memcpy(static_cast<void*>(data_), &v, sizeof(T)); }
  // The shared object itself (CPython's get_obj()).
  T* GetObj() const { return data_; }

  // Whether the value has its RLock; GetLock() returns it (undefined without one).
  bool HasLock() const { return lock_.has_value(); }
  RLock& GetLock() { return *lock_; }

  // Atomic operations on the shared value, for integral T (no lock needed): lock-free across
  // processes for integers of up to 8 bytes (std::atomic_ref). FetchAdd returns the value
  // before (wrapping on overflow); CompareExchange stores `desired` if the value equals
  // `expected`, else loads it into `expected`, and returns whether it stored. Never block; no
  // error. Atomic only against each other, not against Get/Set.
  T FetchAdd(T delta) requires std::is_integral_v<T> {
    return std::atomic_ref<T>(*data_).fetch_add(delta, std::memory_order_acq_rel);
  }
  T Load() const requires std::is_integral_v<T> {
    return std::atomic_ref<T>(*data_).load(std::memory_order_acquire);
  }
  void Store(T v) requires std::is_integral_v<T> {
    std::atomic_ref<T>(*data_).store(v, std::memory_order_release);
  }
  bool CompareExchange(T& expected, T desired) requires std::is_integral_v<T> {
    return std::atomic_ref<T>(*data_).compare_exchange_strong(expected, desired,
                                                               std::memory_order_acq_rel);
  }

 private:
  friend struct sync_internal::ValueCodec<Value>;
  Value(std::shared_ptr<sync_internal::Region> r, T* data) : region_(std::move(r)), data_(data) {}
  std::shared_ptr<sync_internal::Region> region_;
  T* data_ = nullptr;
  std::optional<RLock> lock_;
};

template <typename T>
using RawValue = Value<T>;  // create with LockMode::kNone

template <typename T>
class Array {
  static_assert(std::is_trivially_copyable_v<T>, "Array<T> needs a trivially copyable T");
  static_assert(alignof(T) <= 64,
                "Array<T>: shared objects are 64-byte aligned; T may not need more");

 public:
  // An empty handle, to decode into; any other use is undefined.
  Array() = default;

  // Array<T>::Create(size, mode)
  //
  // `size` zero-filled elements (SHV-4), with a new RLock unless mode is kNone (RawArray).
  // Placed in this process's shared arena as a Lock is (an array over about 64 KiB gets a
  // memfd of its own). Errors: INVALID_ARGUMENT when size is 0 or the byte size overflows;
  // otherwise as Lock::Create (RESOURCE_EXHAUSTED, or a failed call's errno status).
  // Thread-safe.
  [[nodiscard]] static absl::StatusOr<Array> Create(size_t size, LockMode mode = LockMode::kRLock) {
    if (size == 0) return absl::InvalidArgumentError("an Array needs at least one element");
    if (size > (SIZE_MAX - sync_internal::ValueLayout<T>::kDataOffset) / sizeof(T)) {
      return absl::InvalidArgumentError("Array size overflows");
    }
    auto r = sync_internal::AllocateShared(
        sync_internal::ValueLayout<T>::kDataOffset + sizeof(T) * size, "mproc-array");
    if (!r.ok()) return r.status();
    char* base = r->second;
    auto* lock = new (base) sync_internal::LockState();
    T* data = reinterpret_cast<T*>(base + sync_internal::ValueLayout<T>::kDataOffset);
    Array a(r->first, data, size);
    if (mode == LockMode::kRLock) a.lock_.emplace(RLock(r->first, lock));
    return a;
  }
  // Array<T>::Create(initial, mode): a copy of `initial`; errors as Create(size) (an empty
  // `initial` is INVALID_ARGUMENT).
  [[nodiscard]] static absl::StatusOr<Array> Create(std::span<const T> initial, LockMode mode = LockMode::kRLock) {
    absl::StatusOr<Array> a = Create(initial.size(), mode);
    if (!a.ok()) return a;
    std::memcpy(static_cast<void*>(a->data_), initial.data(), initial.size_bytes());
    return a;
  }  // Array<int>::Create({1, 2, 3}).
  [[nodiscard]] static absl::StatusOr<Array> Create(std::initializer_list<T> initial,
                                      LockMode mode = LockMode::kRLock) {
    return Create(std::span<const T>(initial.begin(), initial.size()), mode);
  }


  // The element count; element i (unchecked: i < size()); the first element. No locking.
  size_t size() const { return size_; }
  T& operator[](size_t i) const { return data_[i]; }
  T* data() const { return data_; }
  // Elements [begin, end), clamped to the array.
  std::span<T> Slice(size_t begin, size_t end) const {
    end = end > size_ ? size_ : end;
    begin = begin > end ? end : begin;
    return {data_ + begin, end - begin};
  }
  std::span<T> span() const { return {data_, size_}; }

  // As Value's: whether it has its RLock; GetLock() returns it (undefined without one).
  bool HasLock() const { return lock_.has_value(); }
  RLock& GetLock() { return *lock_; }

 private:
  friend struct sync_internal::ValueCodec<Array>;
  Array(std::shared_ptr<sync_internal::Region> r, T* data, size_t n)
      : region_(std::move(r)), data_(data), size_(n) {}
  std::shared_ptr<sync_internal::Region> region_;
  T* data_ = nullptr;
  size_t size_ = 0;
  std::optional<RLock> lock_;
};

namespace sync_internal {
// Value<T> and Array<T> travel as their segment (lock state at offset 0, data at kDataOffset),
// sizeof(T) (a guard against decoding as another type), the element count and whether the
// lock is used.
template <typename H>
struct ValueCodec;
template <template <typename> class H, typename T>
struct ValueCodec<H<T>> {
  static constexpr bool kIsArray = std::is_same_v<H<T>, Array<T>>;
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 4;
  static void Encode(EncodeBuffer& b, const H<T>& v) {
    // The object's start (its lock state): data sits kDataOffset after it.
    const void* base =
        v.region_ ? reinterpret_cast<const char*>(v.data_) - ValueLayout<T>::kDataOffset : nullptr;
    EncodeRegionRef(b, v.region_, base);
    b.PutVarint(sizeof(T));
    size_t n = 1;
    if constexpr (kIsArray) n = v.size_;
    b.PutVarint(n);
    uint8_t locked = v.lock_.has_value() ? 1 : 0;
    b.Append(&locked, 1);
  }
  static bool Decode(DecodeReader& r, H<T>& out) {
    std::shared_ptr<Region> region;
    char* base = nullptr;
    uint64_t size_of_t = 0;
    uint64_t n = 0;
    uint8_t locked = 0;
    // The region is checked against the element count below, once it is known.
    if (!DecodeRegionRef(r, ValueLayout<T>::kDataOffset, alignof(LockState), &region, &base) ||
        !r.ReadVarint(&size_of_t) || !r.ReadVarint(&n) || !r.Read(&locked, 1)) {
      return false;
    }
    if (region == nullptr) {
      out = H<T>();
      return true;
    }
    if (size_of_t != sizeof(T)) return r.Fail("Value/Array element size differs from the sender's");
    if (locked > 1 || n == 0 || (!kIsArray && n != 1)) return r.Fail("bad Value/Array header");
    const size_t avail = region->mapping.size() - static_cast<size_t>(base - static_cast<char*>(region->mapping.data()));
    if (n > (avail - ValueLayout<T>::kDataOffset) / sizeof(T)) {
      return r.Fail("Value/Array element count exceeds its segment");
    }
    T* data = reinterpret_cast<T*>(base + ValueLayout<T>::kDataOffset);
    H<T> v = [&] {
      if constexpr (kIsArray) {
        return H<T>(region, data, static_cast<size_t>(n));
      } else {
        return H<T>(region, data);
      }
    }();
    if (locked) v.lock_.emplace(RLock(region, reinterpret_cast<LockState*>(base)));
    out = std::move(v);
    return true;
  }
};
}  // namespace sync_internal

template <typename T>
struct Codec<Value<T>> : sync_internal::ValueCodec<Value<T>> {};
template <typename T>
struct Codec<Array<T>> : sync_internal::ValueCodec<Array<T>> {};

}  // namespace mproc

#endif  // MPROC_SYNC_VALUE_H_
