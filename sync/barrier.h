// sync/barrier.h — Barrier across processes: `parties` processes (or threads) meet, then all
// go on together.
//
//   MPROC_ASSIGN_OR_RETURN(Barrier b, Barrier::Create(3));
//   absl::StatusOr<uint32_t> index = b.Wait();   // 0 .. parties-1, distinct per party
//
// CPython's semantics (SYNC-20..28): Wait returns an index, distinct per party in a round
// (arrival order: exactly one party gets 0); the action, if given, runs exactly once per
// round in the last party to arrive, before anyone is released (an action that throws breaks
// the barrier). Abort() breaks it: current and future waiters fail. Reset() breaks the current
// round (its waiters fail) and makes the barrier usable again. A Wait that times out breaks
// the barrier for every party. A broken barrier's Wait returns FAILED_PRECONDITION ("barrier
// is broken", CPython's BrokenBarrierError) until Reset().
//
// Dead parties: a party killed while others wait leaves them waiting — until their timeout
// (the constructor's default timeout or Wait's) breaks the barrier. Give cross-process
// barriers a timeout. A party killed inside the barrier's own short critical section (in the
// action, which runs under it) breaks the barrier for every party within about 20 ms (its
// lock is an owner word, base/owner.h), where every later call used to wait for ever.
//
// The action is a plain function pointer (it must mean the same code in every process: true
// for fork children; spawn children get it through spawn/'s function identity).
// Thread-safety: handles are thread-safe and cheap to copy.

#ifndef MPROC_SYNC_BARRIER_H_
#define MPROC_SYNC_BARRIER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sync/internal/shared_state.h"

namespace mproc {

namespace sync_internal {
struct alignas(64) BarrierState {
  std::atomic<uint32_t> mutex{0};  // an owner word (base/owner.h): guards the fields below
  std::atomic<uint32_t> seq{0};    // generation; bumped to release or reset a round
  uint32_t parties = 0;
  uint32_t arrived = 0;
  uint32_t broken = 0;
  uint32_t reset_generation = UINT32_MAX;  // a generation ended by Reset/Abort
  int64_t default_timeout_ns = -1;         // < 0: none
};
}  // namespace sync_internal

class Barrier {
 public:
  // An empty handle, to decode into; any other use is undefined.
  Barrier() = default;

  // Barrier::Create(parties, action, timeout)
  //
  // A new barrier for `parties` parties; `action` (may be null) runs once per round, and
  // `timeout` is Wait's default (infinite or negative: none). Placed in this process's shared
  // arena as a Lock is. Errors: INVALID_ARGUMENT when parties is 0; otherwise as
  // Lock::Create (RESOURCE_EXHAUSTED, or a failed call's errno status). Thread-safe.
  [[nodiscard]] static absl::StatusOr<Barrier> Create(uint32_t parties, void (*action)() = nullptr,
                                        absl::Duration timeout = absl::InfiniteDuration());

  // Barrier::Wait(timeout)
  //
  // Arrives and blocks until all parties have, up to `timeout` (the barrier's default when
  // none is given; zero or negative: no sleep); returns this party's arrival index. The last
  // party runs the action under the barrier's internal lock: the action must not call this
  // barrier, and the timeout does not bound waiting for that lock. Signals do not end the
  // wait. Errors, all FAILED_PRECONDITION: broken on entry; the timeout passed (this Wait
  // breaks the barrier); the round was broken while waiting (Abort, Reset, another party's
  // timeout, a throwing action); the action threw (in the last party). Thread-safe and
  // process-safe, but a process killed holding the internal lock (in the action, say) blocks
  // every call that then needs it, forever.
  [[nodiscard]] absl::StatusOr<uint32_t> Wait(std::optional<absl::Duration> timeout = std::nullopt);
  // Barrier::Abort(): breaks the barrier: current waiters and later Waits fail with
  // FAILED_PRECONDITION until Reset(). Waits only for the internal lock. Thread- and
  // process-safe.
  void Abort();
  // Barrier::Reset(): the current round's waiters, if any, fail with FAILED_PRECONDITION, and
  // the barrier is unbroken and empty again. Waits only for the internal lock. Thread- and
  // process-safe.
  void Reset();

  // Fixed at Create. Never blocks.
  uint32_t parties() const { return s_->parties; }
  // Parties waiting in the current round, and whether the barrier is broken: snapshots, taken
  // under the internal lock (so they wait while the last party runs the action).
  uint32_t NWaiting() const;
  bool Broken() const;

 private:
  friend struct Codec<Barrier>;
  Barrier(std::shared_ptr<sync_internal::Region> r, sync_internal::BarrierState* s, void (*action)())
      : region_(std::move(r)), s_(s), action_(action) {}
  std::shared_ptr<sync_internal::Region> region_;
  sync_internal::BarrierState* s_ = nullptr;
  void (*action_)() = nullptr;
};

// The state, then the action as a code reference (serialize/codec.h: same binaries only).
template <>
struct Codec<Barrier> {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 2;
  static void Encode(EncodeBuffer& b, const Barrier& x) {
    sync_internal::EncodeRegionRef(b, x.region_, x.s_);
    Codec<void (*)()>::Encode(b, x.action_);
  }
  static bool Decode(DecodeReader& r, Barrier& out) {
    std::shared_ptr<sync_internal::Region> region;
    char* state = nullptr;
    void (*action)() = nullptr;
    if (!sync_internal::DecodeRegionRef(r, sizeof(sync_internal::BarrierState),
                                        alignof(sync_internal::BarrierState), &region, &state) ||
        !Codec<void (*)()>::Decode(r, action)) {
      return false;
    }
    out = region ? Barrier(std::move(region), reinterpret_cast<sync_internal::BarrierState*>(state),
                           action)
                 : Barrier();
    return true;
  }
};

}  // namespace mproc

#endif  // MPROC_SYNC_BARRIER_H_
