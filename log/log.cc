#include "log/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/mutex.h"
#include "base/process_id.h"
#include "base/status.h"
#include "spawn/process.h"
#include "spdlog/details/log_msg.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace mproc {
namespace {

// The record the listener is writing on this thread: %N and %j show its process, not the
// listener's.
thread_local const LogRecord* t_origin = nullptr;

void Append(std::string_view s, spdlog::memory_buf_t& dest) { dest.append(s.data(), s.data() + s.size()); }

class ProcessNameFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    Append(t_origin ? std::string_view(t_origin->process) : std::string_view(CurrentProcessName()), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<ProcessNameFlag>();
  }
};

class PidFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    Append(std::to_string(t_origin ? t_origin->pid : CurrentPid()), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<PidFlag>(); }
};

std::string_view CPythonLevelName(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace: return "TRACE";
    case spdlog::level::debug: return "DEBUG";
    case spdlog::level::info: return "INFO";
    case spdlog::level::warn: return "WARNING";
    case spdlog::level::err: return "ERROR";
    case spdlog::level::critical: return "CRITICAL";
    default: return "NOTSET";
  }
}

class LevelFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    Append(CPythonLevelName(msg.level), dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<LevelFlag>(); }
};

ABSL_CONST_INIT Mutex g_mu;  // GetLogger's creation and LogToStderr's sink
bool g_stderr_added ABSL_GUARDED_BY(g_mu) = false;

}  // namespace

std::unique_ptr<spdlog::formatter> ProcessFormatter(const std::string& pattern) {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<ProcessNameFlag>('N').add_flag<PidFlag>('j').add_flag<LevelFlag>('J').set_pattern(pattern);
  return f;
}

std::shared_ptr<spdlog::logger> GetLogger() {
  MutexLock lock(&g_mu);
  std::shared_ptr<spdlog::logger> l = spdlog::get("mproc");
  if (l) return l;
  l = std::make_shared<spdlog::logger>("mproc");
  l->set_level(spdlog::level::warn);  // CPython's default effective level
  spdlog::register_logger(l);
  return l;
}

std::shared_ptr<spdlog::logger> LogToStderr(spdlog::level::level_enum level) {
  std::shared_ptr<spdlog::logger> l = GetLogger();
  {
    MutexLock lock(&g_mu);
    if (!g_stderr_added) {
      auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
      sink->set_formatter(ProcessFormatter());
      l->sinks().push_back(std::move(sink));
      g_stderr_added = true;
    }
  }
  l->set_level(level);
  return l;
}

void QueueSink::sink_it_(const spdlog::details::log_msg& msg) {
  LogRecord r;
  r.level = static_cast<int32_t>(msg.level);
  r.logger.assign(msg.logger_name.data(), msg.logger_name.size());
  r.message.assign(msg.payload.data(), msg.payload.size());
  r.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(msg.time.time_since_epoch()).count();
  r.pid = static_cast<int32_t>(CurrentPid());
  r.process = CurrentProcessName();
  r.thread = msg.thread_id;
  absl::Status s = q_.Put(std::optional<LogRecord>(std::move(r)));
  if (!s.ok()) {
    // Not lost in silence: the record goes to stderr, with why it could not be queued.
    std::string line = absl::StrCat("[", std::string(CPythonLevelName(msg.level)), "/",
                                    CurrentProcessName(), "] ",
                                    std::string(msg.payload.data(), msg.payload.size()),
                                    " (log queue: ", s.ToString(), ")\n");
    (void)!::write(STDERR_FILENO, line.data(), line.size());
  }
}

std::shared_ptr<spdlog::logger> LogToQueue(LogQueue q, spdlog::level::level_enum level,
                                           const std::string& name) {
  std::shared_ptr<spdlog::logger> l = name == "mproc" ? GetLogger() : spdlog::get(name);
  if (!l) {
    l = std::make_shared<spdlog::logger>(name);
    spdlog::register_logger(l);
  }
  l->sinks().clear();
  l->sinks().push_back(std::make_shared<QueueSink>(std::move(q)));
  l->set_level(level);
  return l;
}

struct LogListener::State {
  LogQueue q;
  std::shared_ptr<spdlog::logger> target;
  Mutex mu;
  CondVar cv;
  bool done ABSL_GUARDED_BY(mu) = false;      // the thread passed the end marker
  bool stopping ABSL_GUARDED_BY(mu) = false;  // the end marker was put
  std::atomic<uint64_t> written{0};
};

LogListener::LogListener(LogQueue q, std::shared_ptr<spdlog::logger> target)
    : s_(std::make_shared<State>()) {
  s_->q = std::move(q);
  s_->target = std::move(target);
}

absl::StatusOr<std::unique_ptr<LogListener>> LogListener::Start(
    LogQueue q, std::shared_ptr<spdlog::logger> target) {
  if (!target) return absl::InvalidArgumentError("LogListener::Start: no target logger");
  std::unique_ptr<LogListener> l(new LogListener(std::move(q), std::move(target)));
  l->thread_ = std::thread([s = l->s_] {
    for (;;) {
      absl::StatusOr<std::optional<LogRecord>> item = s->q.Get();
      if (!item.ok() || !item->has_value()) break;  // the end marker (or a queue gone bad)
      const LogRecord& r = **item;
      const auto level = static_cast<spdlog::level::level_enum>(r.level);
      if (!s->target->should_log(level)) continue;
      spdlog::details::log_msg msg(
          spdlog::log_clock::time_point(std::chrono::duration_cast<spdlog::log_clock::duration>(
              std::chrono::nanoseconds(r.time_ns))),
          spdlog::source_loc{}, r.logger, level, r.message);
      msg.thread_id = r.thread;
      t_origin = &r;
      for (auto& sink : s->target->sinks()) {
        if (sink->should_log(level)) sink->log(msg);
      }
      if (level >= s->target->flush_level()) {
        for (auto& sink : s->target->sinks()) sink->flush();
      }
      t_origin = nullptr;
      s->written.fetch_add(1, std::memory_order_relaxed);
    }
    for (auto& sink : s->target->sinks()) sink->flush();
    MutexLock lock(&s->mu);
    s->done = true;
    s->cv.SignalAll();
  });
  return l;
}

absl::Status LogListener::Stop(absl::Duration timeout) {
  bool put_end = false;  // this call puts the end marker (outside the lock)
  {
    MutexLock lock(&s_->mu);
    if (s_->done) return absl::OkStatus();
    put_end = !s_->stopping;
    s_->stopping = true;
  }
  if (put_end) MPROC_RETURN_IF_ERROR(s_->q.Put(std::optional<LogRecord>()));
  MutexLock lock(&s_->mu);
  if (!s_->cv.WaitFor(lock, timeout, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_->mu) {
        return s_->done;
      })) {
    return absl::DeadlineExceededError("LogListener::Stop: records still being written");
  }
  return absl::OkStatus();
}

uint64_t LogListener::written() const { return s_->written.load(std::memory_order_relaxed); }

LogListener::~LogListener() {
  (void)Stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace mproc
