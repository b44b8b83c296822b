// pool/internal/task_protocol.h — what a pool task is on the wire, and how a worker runs it.
//
// A task is a chunk: its entry (RunChunk<R, P...>, found in the worker by code reference), the
// function, a count, and that many argument tuples (Codec<std::tuple<P...>>). Its output is
// a count and, per item, a tag and the result or the RemoteError. Shared by Pool and
// ProcessPoolExecutor (pool/pool.h, pool/executor.h) and the managed Pool (manager/manager.h),
// whose tasks travel through the manager's server to a pool there.

#ifndef MPROC_POOL_INTERNAL_TASK_PROTOCOL_H_
#define MPROC_POOL_INTERNAL_TASK_PROTOCOL_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/unique_fd.h"
#include "pool/internal/task_sink.h"
#include "serialize/codec.h"
#include "serialize/remote_error.h"
#include "spawn/process.h"

namespace mproc::pool_internal {

template <typename R>
using Stored = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

// Worker side: runs fn over `n` encoded argument tuples, writing per item a tag and the
// result or the RemoteError.
template <typename R, typename... P>
void RunChunk(DecodeReader& in, EncodeBuffer& out) {
  R (*fn)(P...) = nullptr;
  uint64_t n = 0;
  if (!Codec<R (*)(P...)>::Decode(in, fn) || !in.ReadVarint(&n) || fn == nullptr) {
    out.PutVarint(0);
    return;
  }
  out.PutVarint(n);
  for (uint64_t i = 0; i < n; ++i) {
    std::tuple<std::decay_t<P>...> params;
    if (!Codec<std::tuple<std::decay_t<P>...>>::Decode(in, params)) {
      RemoteError e;
      e.type_name = "mproc::DecodeError";
      e.what = std::string(in.status().message());
      e.pid = ::getpid();
      e.process_name = CurrentProcessName();
      for (; i < n; ++i) {
        out.Append(&kItemError, 1);
        Encode(e, out);
      }
      return;
    }
    try {
      if constexpr (std::is_void_v<R>) {
        std::apply([&](auto&... a) { fn(std::move(a)...); }, params);
        out.Append(&kItemOk, 1);
        Encode(std::monostate{}, out);
      } else {
        R r = std::apply([&](auto&... a) { return fn(std::move(a)...); }, params);
        out.Append(&kItemOk, 1);
        if constexpr (kTypeCarriesFds<R>) {
          // The encoding borrows the result's descriptors: keep it until `out` is sent.
          auto kept = std::make_shared<const R>(std::move(r));
          Encode(*kept, out);
          out.Keep(std::move(kept));
        } else {
          Encode(r, out);
        }
      }
    } catch (...) {
      out.Append(&kItemError, 1);
      Encode(CaptureCurrentException(CurrentProcessName()), out);
    }
  }
}

// Worker side: the initializer.
template <typename... P>
void RunInit(DecodeReader& in) {
  void (*fn)(P...) = nullptr;
  std::tuple<std::decay_t<P>...> params;
  if (!Codec<void (*)(P...)>::Decode(in, fn) ||
      !Codec<std::tuple<std::decay_t<P>...>>::Decode(in, params) || fn == nullptr) {
    throw std::runtime_error("pool initializer could not be decoded: " +
                             std::string(in.status().message()));
  }
  std::apply([&](auto&... a) { fn(std::move(a)...); }, params);
}

// Parent side: the per-item results of one task's output.
template <typename R>
std::vector<absl::StatusOr<Stored<R>>> DecodeChunk(const absl::Status& status,
                                                   std::span<const std::byte> out,
                                                   std::vector<UniqueFd> fds, size_t expected) {
  std::vector<absl::StatusOr<Stored<R>>> items;
  if (!status.ok()) {
    items.assign(expected, status);
    return items;
  }
  DecodeReader r(out, std::move(fds));
  uint64_t n = 0;
  if (!r.ReadVarint(&n) || n != expected) {
    items.assign(expected, absl::InternalError("pool: malformed task output"));
    return items;
  }
  items.reserve(expected);
  for (uint64_t i = 0; i < n; ++i) {
    uint8_t tag = 0;
    if (!r.Read(&tag, 1)) {
      items.resize(expected, r.status());
      return items;
    }
    if (tag == kItemOk) {
      Stored<R> v{};
      if (!Codec<Stored<R>>::Decode(r, v)) {
        items.push_back(absl::InvalidArgumentError(absl::StrCat(
            "pool: could not decode a task result: ", r.status().message())));
        items.resize(expected, absl::InternalError("pool: task output truncated"));
        return items;
      }
      items.push_back(std::move(v));
    } else {
      RemoteError e;
      if (!Codec<RemoteError>::Decode(r, e)) {
        items.resize(expected, absl::InternalError("pool: malformed task error"));
        return items;
      }
      items.push_back(RemoteErrorToStatus(e));
    }
  }
  return items;
}

// Map's per-item result slots: R itself, except for bool, whose std::vector has no
// addressable elements to decode into.
struct BoolSlot {
  bool value = false;
};
template <typename R>
using Slot = std::conditional_t<std::is_same_v<R, bool>, BoolSlot, R>;
inline bool& SlotValue(BoolSlot& s) { return s.value; }
template <typename R>
R& SlotValue(R& s) {
  return s;
}
template <typename R>
std::vector<R> FromSlots(std::vector<Slot<R>>&& slots) {
  if constexpr (std::is_same_v<R, bool>) {
    std::vector<bool> out(slots.size());
    for (size_t i = 0; i < slots.size(); ++i) out[i] = slots[i].value;
    return out;
  } else {
    return std::move(slots);
  }
}

// Parent side, for Map: decodes one task's per-item results straight into dest[0, expected),
// recording the first failed item (its index within the chunk, and why) in *first_bad/*bad.
template <typename R>
void DecodeChunkInto(const absl::Status& status, std::span<const std::byte> out,
                     std::vector<UniqueFd> fds,
                     size_t expected, Slot<Stored<R>>* dest, size_t* first_bad,
                     absl::Status* bad) {
  *first_bad = SIZE_MAX;
  auto fail = [&](size_t i, absl::Status why) {
    if (*first_bad == SIZE_MAX) {
      *first_bad = i;
      *bad = std::move(why);
    }
  };
  if (!status.ok()) return fail(0, status);
  DecodeReader r(out, std::move(fds));
  uint64_t n = 0;
  if (!r.ReadVarint(&n) || n != expected) {
    return fail(0, absl::InternalError("pool: malformed task output"));
  }
  for (uint64_t i = 0; i < n; ++i) {
    uint8_t tag = 0;
    if (!r.Read(&tag, 1)) return fail(i, r.status());
    if (tag == kItemOk) {
      if (!Codec<Stored<R>>::Decode(r, SlotValue(dest[i]))) {
        return fail(i, absl::InvalidArgumentError(absl::StrCat(
                           "pool: could not decode a task result: ", r.status().message())));
      }
    } else {
      RemoteError e;
      if (!Codec<RemoteError>::Decode(r, e)) {
        return fail(i, absl::InternalError("pool: malformed task error"));
      }
      fail(i, RemoteErrorToStatus(e));
    }
  }
}

template <typename F>
auto AsFunctionPointer(F fn) {
  static_assert(spawn_internal::FunctionPointerLike<F>,
                "pool tasks must be function pointers or captureless lambdas (they run in "
                "another process, found by code reference)");
  return +fn;
}

template <typename Fn>
struct FnTraits;
template <typename R, typename... P>
struct FnTraits<R (*)(P...)> {
  using Result = R;
  using Params = std::tuple<std::decay_t<P>...>;
  static constexpr TaskEntry kEntry = &RunChunk<R, P...>;
};

// What a task function F (a function pointer or a captureless lambda) is to a pool or
// executor: TaskFn its function pointer type, TaskTraits its FnTraits, TaskResult the type its
// result is kept and handed back as (Stored: a void function's is std::monostate).
template <typename F>
using TaskFn = decltype(AsFunctionPointer(std::declval<F>()));
template <typename F>
using TaskTraits = FnTraits<TaskFn<F>>;
template <typename F>
using TaskResult = Stored<typename TaskTraits<F>::Result>;


// One call f(params) as a task: its entry, the function, one argument tuple.
template <typename Traits, typename Fn>
EncodeBuffer EncodeCall(Fn f, const typename Traits::Params& params) {
  EncodeBuffer task;
  Encode(Traits::kEntry, task);
  Encode(f, task);
  task.PutVarint(1);
  Encode(params, task);
  return task;
}

// CPython's default Map chunksize: n / (4 * processes), rounded up, at least 1.
inline size_t AutoChunksize(size_t n, int processes) {
  const size_t div = static_cast<size_t>(std::max(processes, 1)) * 4;
  return std::max<size_t>(1, (n + div - 1) / div);
}


// Encodes items [begin, end) as one task, with the converted arguments that own any
// descriptors the bytes borrow (to be kept alive until the task is sent).
template <typename Traits, bool kStar, typename Fn, typename T>
std::pair<EncodeBuffer, std::shared_ptr<void>> EncodeChunk(
    Fn f, const std::vector<T>& items, size_t begin, size_t end) {
  using Params = typename Traits::Params;
  if constexpr (!kTypeCarriesFds<Params>) {
    // No descriptors to keep alive: encode straight from the items (into a buffer sized for
    // small encodings up front: growing a large chunk's buffer copies it several times).
    EncodeBuffer task(64 + (end - begin) * std::max<size_t>(sizeof(Params) / 2, 1));
    Encode(Traits::kEntry, task);
    Encode(f, task);
    task.PutVarint(end - begin);
    for (size_t i = begin; i < end; ++i) {
      if constexpr (kStar) {
        Encode(std::apply([](const auto&... a) { return Params(a...); }, items[i]), task);
      } else {
        static_assert(std::tuple_size_v<Params> == 1,
                      "Map/IMap take a function of one argument (StarMap for several)");
        Encode(Params(items[i]), task);
      }
    }
    return {std::move(task), nullptr};
  }
  auto owned = std::make_shared<std::vector<Params>>();
  owned->reserve(end - begin);
  for (size_t i = begin; i < end; ++i) {
    if constexpr (kStar) {
      owned->push_back(std::apply([](const auto&... a) { return Params(a...); }, items[i]));
    } else {
      static_assert(std::tuple_size_v<Params> == 1,
                    "Map/IMap take a function of one argument (StarMap for several)");
      owned->push_back(Params(items[i]));
    }
  }
  EncodeBuffer task;
  Encode(Traits::kEntry, task);
  Encode(f, task);
  task.PutVarint(end - begin);
  for (const Params& p : *owned) Encode(p, task);
  return {std::move(task), std::move(owned)};
}

template <typename Fn>
struct InitTraits;
template <typename... P>
struct InitTraits<void (*)(P...)> {
  using Params = std::tuple<std::decay_t<P>...>;
  static constexpr InitEntry kEntry = &RunInit<P...>;
};


}  // namespace mproc::pool_internal

#endif  // MPROC_POOL_INTERNAL_TASK_PROTOCOL_H_
