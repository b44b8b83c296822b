// log/log.h — logging across processes: CPython's multiprocessing.get_logger(),
// log_to_stderr(), and the QueueHandler/QueueListener pattern, on spdlog.
//
//   // Every process: lines as CPython's log_to_stderr() prints them, "[INFO/Process-1] ...".
//   mproc::LogToStderr(spdlog::level::info)->info("started {}", n);
//
//   // Children log into a Queue; one thread of the parent writes their records to its sinks.
//   auto q = mproc::LogQueue::Create().value();
//   auto listener = mproc::LogListener::Start(q, parent_logger).value();
//   mproc::Process p(Child, q);   // Child: mproc::LogToQueue(q)->warn("disk {}% full", 91);
//   ...
//   listener->Stop();             // returns once every record put before it is written
//
// Why spdlog (Debian's libspdlog-dev 1.10): loggers, sinks and formatters are separate,
// pluggable objects, so the queue handler is one sink and the listener one loop over the
// target's sinks, with no global state to fight; formatting is fmt's (compile-time checked);
// it is fast when a level is off (one comparison). glog, the other packaged choice, has one
// global logger configured by flags, writes files of its own naming, and aborts on FATAL,
// none of which a library should impose on a service that links it.
//
// A record put by LogToQueue's sink is in shared memory when the log call returns (Queue::Put
// is durable: no feeder thread), so a child that exits, _exits or is SIGKILLed right after
// logging loses nothing; records of one process come out in the order it logged them (one
// Queue keeps per-producer order), each with the logging process's name and pid.
//
// Patterns: every formatter made by ProcessFormatter (LogToStderr's, and the listener's
// default) knows three flags besides spdlog's own:
//   %N  the name of the process that logged ("MainProcess", "Process-1", "PoolWorker-2")
//   %j  its pid                    %J  the level as CPython names it (DEBUG, INFO, WARNING...)
// spdlog's %P is the pid of the process that formats, which for a listener is the parent's.

#ifndef MPROC_LOG_LOG_H_
#define MPROC_LOG_LOG_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ipc/queue.h"
#include "serialize/codec.h"
#include "spdlog/formatter.h"
#include "spdlog/logger.h"
#include "spdlog/sinks/base_sink.h"

namespace mproc {

// CPython's log_to_stderr() format.
inline constexpr char kLogPattern[] = "[%J/%N] %v";

// One log record as it crosses processes.
struct LogRecord {
  int32_t level = 0;  // spdlog::level::level_enum
  std::string logger;
  std::string message;
  int64_t time_ns = 0;  // system clock, since the epoch
  int32_t pid = 0;
  std::string process;  // the logging process's name
  uint64_t thread = 0;  // its thread id, for %t
};
MPROC_CODEC_FIELDS(LogRecord, level, logger, message, time_ns, pid, process, thread)

// The queue records travel on; nullopt is the listener's end marker.
using LogQueue = Queue<std::optional<LogRecord>>;

// A formatter for `pattern` that knows %N, %j and %J (see above).
std::unique_ptr<spdlog::formatter> ProcessFormatter(const std::string& pattern = kLogPattern);

// CPython's multiprocessing.get_logger(): the logger named "mproc", created on first use with
// no sinks and level warning; what it holds is each process's own (a spawned child starts
// with a fresh one).
std::shared_ptr<spdlog::logger> GetLogger();

// CPython's log_to_stderr(level): adds (once per process) a stderr sink formatted with
// kLogPattern to GetLogger(), sets its level, and returns it.
std::shared_ptr<spdlog::logger> LogToStderr(spdlog::level::level_enum level = spdlog::level::info);

// CPython's QueueHandler: a sink that puts each record on `q`. A full queue (one made with a
// maxsize) blocks the logging call until there is room, so records are never dropped; a
// queue that cannot take the record at all (its memory is gone) writes the record to stderr
// instead, with the reason.
class QueueSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit QueueSink(LogQueue q) : q_(std::move(q)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  LogQueue q_;
};

// Makes GetLogger() (or the logger `name`, created if absent) send its records to `q` at
// `level` and above, replacing its sinks: the call a child makes first (for a Pool, in the
// initializer). Returns the logger.
std::shared_ptr<spdlog::logger> LogToQueue(LogQueue q,
                                           spdlog::level::level_enum level = spdlog::level::debug,
                                           const std::string& name = "mproc");

// CPython's QueueListener: a thread that takes records off a LogQueue and writes each to the
// sinks of `target` that accept its level (the target's own level filters first), keeping the
// record's time, logger name, thread, and, through %N/%j, its process's name and pid.
class LogListener {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LogListener>> Start(
      LogQueue q, std::shared_ptr<spdlog::logger> target);
  ~LogListener();
  LogListener(const LogListener&) = delete;
  LogListener& operator=(const LogListener&) = delete;

  // Puts the end marker and waits (up to `timeout`) for the thread to write every record put
  // before it, then flushes the target. Records put after Stop are left in the queue.
  // DEADLINE_EXCEEDED if the thread did not get there in time (it carries on; call Stop again
  // or let the destructor wait for it). A Stop after one that returned OK returns OK at once.
  absl::Status Stop(absl::Duration timeout = absl::InfiniteDuration());

  // Records written so far.
  uint64_t written() const;

 private:
  LogListener(LogQueue q, std::shared_ptr<spdlog::logger> target);
  void Run();

  struct State;
  std::shared_ptr<State> s_;
  std::thread thread_;
};

}  // namespace mproc

#endif  // MPROC_LOG_LOG_H_
