// context/context.h — GetContext: CPython's multiprocessing.get_context(method).
//
//   mproc::Context ctx = mproc::GetContext(mproc::StartMethod::kSpawn);
//   mproc::Process p = ctx.Process(Worker, 42);           // starts with spawn
//   auto pool = ctx.Pool({.processes = 4}).value();         // its workers too
//   auto q = ctx.Queue<int>().value();
//
// A Context is a start method and the constructors of everything whose behaviour depends on
// it: Process, Pool, ProcessPoolExecutor and Manager start their processes with the
// context's method, whatever the process-wide default is (mproc::SetStartMethod), so one
// program can use several methods side by side, as CPython's contexts allow. The other
// objects (Queue, Pipe, Lock, Value, ...) are the same under every method: their handles work
// in a child whichever way it started. The context offers them too, so code written against
// a context reads as CPython's `ctx.Queue()`.
//
// An options struct that names a different start method than the context's is refused with
// INVALID_ARGUMENT rather than silently overridden.

#ifndef MPROC_CONTEXT_CONTEXT_H_
#define MPROC_CONTEXT_CONTEXT_H_

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ipc/connection.h"
#include "ipc/queue.h"
#include "manager/manager.h"
#include "pool/executor.h"
#include "pool/pool.h"
#include "spawn/process.h"
#include "sync/barrier.h"
#include "sync/condition.h"
#include "sync/event.h"
#include "sync/lock.h"
#include "sync/semaphore.h"
#include "sync/value.h"

namespace mproc {

class Context {
 public:
  // Context::Context(method): the context for `method`, as GetContext(method). Never fails. A
  // Context is an immutable value: copy it freely and use it from any thread.
  explicit Context(StartMethod method) : method_(method) {}

  // ctx.get_start_method()
  StartMethod start_method() const { return method_; }

  // The constructors whose processes start with this context's method.
  //
  // Context::Process(target, args...)
  //
  // An unstarted Process with SetStartMethod(this context's method) already called, so it
  // starts with that method whatever the process-wide default is. Never fails: Start reports
  // the errors (Process::Start), such as FAILED_PRECONDITION for a capturing target in a spawn
  // or forkserver context. Thread-safe.
  template <typename F, typename... A>
  mproc::Process Process(F&& target, A&&... args) const {
    mproc::Process p(std::forward<F>(target), std::forward<A>(args)...);
    p.SetStartMethod(method_);
    return p;
  }
  // Context::Pool(options), Context::Pool(options, initializer, initargs...)
  //
  // Pool::Create with options.start_method set to this context's method. Errors:
  // INVALID_ARGUMENT when options.start_method names another method (nothing is started);
  // otherwise exactly Pool::Create (its errors, its blocking).
  [[nodiscard]] absl::StatusOr<std::unique_ptr<mproc::Pool>> Pool(PoolOptions options = {}) const {
    if (absl::Status s = Bind(options.start_method, "PoolOptions"); !s.ok()) return s;
    return mproc::Pool::Create(std::move(options));
  }
  template <typename F, typename... A>
  [[nodiscard]]
  absl::StatusOr<std::unique_ptr<mproc::Pool>> Pool(PoolOptions options, F initializer,
                                                    A&&... initargs) const {
    if (absl::Status s = Bind(options.start_method, "PoolOptions"); !s.ok()) return s;
    return mproc::Pool::Create(std::move(options), initializer, std::forward<A>(initargs)...);
  }
  // Context::Executor(options)
  //
  // ProcessPoolExecutor::Create with options.start_method set to this context's method.
  // Errors: INVALID_ARGUMENT when options.start_method names another method (nothing is
  // started); otherwise exactly ProcessPoolExecutor::Create.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<ProcessPoolExecutor>> Executor(ExecutorOptions options = {}) const {
    if (absl::Status s = Bind(options.start_method, "ExecutorOptions"); !s.ok()) return s;
    return ProcessPoolExecutor::Create(std::move(options));
  }
  // Context::Manager(options)
  //
  // Manager::Start with options.start_method set to this context's method (for the server
  // process). Errors: INVALID_ARGUMENT when options.start_method names another method (nothing
  // is started); otherwise exactly Manager::Start (its errors, its blocking).
  [[nodiscard]]
  absl::StatusOr<std::unique_ptr<mproc::Manager>> Manager(ManagerOptions options = {}) const {
    if (absl::Status s = Bind(options.start_method, "ManagerOptions"); !s.ok()) return s;
    return mproc::Manager::Start(std::move(options));
  }

  // Context::Queue<T>(maxsize), SimpleQueue<T>(), JoinableQueue<T>(maxsize), Pipe(duplex),
  //   Lock(), RLock(), Semaphore(value), BoundedSemaphore(value), Event(), Condition(),
  //   Barrier(parties), Value<T>(initial, mode), Array<T>(size or initial, mode)
  //
  // The same under every start method; here so that `ctx.Lock()` reads as CPython's. Each is
  // exactly the type's own Create (mproc::Pipe for Pipe): its errors, blocking and
  // thread-safety are that function's, and the context adds none.
  template <typename T>
  [[nodiscard]] absl::StatusOr<mproc::Queue<T>> Queue(size_t maxsize = 0) const {
    return mproc::Queue<T>::Create(maxsize);
  }
  template <typename T>
  [[nodiscard]] absl::StatusOr<mproc::SimpleQueue<T>> SimpleQueue() const {
    return mproc::SimpleQueue<T>::Create();
  }
  template <typename T>
  [[nodiscard]] absl::StatusOr<mproc::JoinableQueue<T>> JoinableQueue(size_t maxsize = 0) const {
    return mproc::JoinableQueue<T>::Create(maxsize);
  }
  [[nodiscard]] absl::StatusOr<std::pair<Connection, Connection>> Pipe(bool duplex = true) const {
    return mproc::Pipe(duplex);
  }
  [[nodiscard]] absl::StatusOr<mproc::Lock> Lock() const { return mproc::Lock::Create(); }
  [[nodiscard]] absl::StatusOr<mproc::RLock> RLock() const { return mproc::RLock::Create(); }
  [[nodiscard]] absl::StatusOr<mproc::Semaphore> Semaphore(uint32_t value = 1) const {
    return mproc::Semaphore::Create(value);
  }
  [[nodiscard]] absl::StatusOr<mproc::BoundedSemaphore> BoundedSemaphore(uint32_t value = 1) const {
    return mproc::BoundedSemaphore::Create(value);
  }
  [[nodiscard]] absl::StatusOr<mproc::Event> Event() const { return mproc::Event::Create(); }
  [[nodiscard]]
  absl::StatusOr<mproc::Condition> Condition() const { return mproc::Condition::Create(); }
  [[nodiscard]] absl::StatusOr<mproc::Barrier> Barrier(uint32_t parties) const {
    return mproc::Barrier::Create(parties);
  }
  template <typename T>
  [[nodiscard]] absl::StatusOr<mproc::Value<T>> Value(const T& initial = T{}, LockMode mode = LockMode::kRLock) const {
    return mproc::Value<T>::Create(initial, mode);
  }
  template <typename T>
  [[nodiscard]]
  absl::StatusOr<mproc::Array<T>> Array(size_t size, LockMode mode = LockMode::kRLock) const {
    return mproc::Array<T>::Create(size, mode);
  }
  template <typename T>
  [[nodiscard]] absl::StatusOr<mproc::Array<T>> Array(std::initializer_list<T> initial,
                                        LockMode mode = LockMode::kRLock) const {
    return mproc::Array<T>::Create(initial, mode);
  }

 private:
  absl::Status Bind(std::optional<StartMethod>& wanted, std::string_view what) const {
    if (wanted.has_value() && *wanted != method_) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(what), " names start method '", std::string(StartMethodName(*wanted)),
          "' in a '", std::string(StartMethodName(method_)), "' context"));
    }
    wanted = method_;
    return absl::OkStatus();
  }

  StartMethod method_;
};

// A context for `method`.
Context GetContext(StartMethod method);
// The context of the process-wide start method (GetStartMethod(): forkserver unless
// SetStartMethod chose another).
Context GetContext();
// By name, as CPython's: "fork", "spawn" or "forkserver"; INVALID_ARGUMENT for any other
// (CPython's ValueError "cannot find context for ...").
[[nodiscard]] absl::StatusOr<Context> GetContext(std::string_view method);

}  // namespace mproc

#endif  // MPROC_CONTEXT_CONTEXT_H_
