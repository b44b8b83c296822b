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
#include <memory>
#include <optional>
#include <span>
#include <type_traits>

#include "absl/status/statusor.h"
#include "sync/lock.h"

namespace mproc {

enum class LockMode { kRLock, kNone };

namespace sync_internal {
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

 public:
  static absl::StatusOr<Value> Create(const T& initial = T{}, LockMode mode = LockMode::kRLock) {
    absl::StatusOr<std::shared_ptr<sync_internal::Region>> r = sync_internal::CreateRegion(
        sync_internal::ValueLayout<T>::kDataOffset + sizeof(T), "mproc-value");
    if (!r.ok()) return r.status();
    char* base = static_cast<char*>((*r)->mapping.data());
    auto* lock = new (base) sync_internal::LockState();
    T* data = reinterpret_cast<T*>(base + sync_internal::ValueLayout<T>::kDataOffset);
    std::memcpy(static_cast<void*>(data), &initial, sizeof(T));
    Value v(*r, data);
    if (mode == LockMode::kRLock) v.lock_.emplace(RLock(*r, lock));
    return v;
  }

  T Get() const {
    T out;
    std::memcpy(&out, data_, sizeof(T));
    return out;
  }
  void Set(const T& v) { std::memcpy(static_cast<void*>(data_), &v, sizeof(T)); }
  // The shared object itself (CPython's get_obj()).
  T* GetObj() const { return data_; }

  bool HasLock() const { return lock_.has_value(); }
  RLock& GetLock() { return *lock_; }

  // Atomic operations on the shared value, for integral T (no lock needed).
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

 public:
  // `size` zero-filled elements (SHV-4).
  static absl::StatusOr<Array> Create(size_t size, LockMode mode = LockMode::kRLock) {
    if (size == 0) return absl::InvalidArgumentError("an Array needs at least one element");
    absl::StatusOr<std::shared_ptr<sync_internal::Region>> r = sync_internal::CreateRegion(
        sync_internal::ValueLayout<T>::kDataOffset + sizeof(T) * size, "mproc-array");
    if (!r.ok()) return r.status();
    char* base = static_cast<char*>((*r)->mapping.data());
    auto* lock = new (base) sync_internal::LockState();
    T* data = reinterpret_cast<T*>(base + sync_internal::ValueLayout<T>::kDataOffset);
    Array a(*r, data, size);
    if (mode == LockMode::kRLock) a.lock_.emplace(RLock(*r, lock));
    return a;
  }
  static absl::StatusOr<Array> Create(std::span<const T> initial, LockMode mode = LockMode::kRLock) {
    absl::StatusOr<Array> a = Create(initial.size(), mode);
    if (!a.ok()) return a;
    std::memcpy(static_cast<void*>(a->data_), initial.data(), initial.size_bytes());
    return a;
  }

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

  bool HasLock() const { return lock_.has_value(); }
  RLock& GetLock() { return *lock_; }

 private:
  Array(std::shared_ptr<sync_internal::Region> r, T* data, size_t n)
      : region_(std::move(r)), data_(data), size_(n) {}
  std::shared_ptr<sync_internal::Region> region_;
  T* data_ = nullptr;
  size_t size_ = 0;
  std::optional<RLock> lock_;
};

}  // namespace mproc

#endif  // MPROC_SYNC_VALUE_H_
