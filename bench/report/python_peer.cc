#include "bench/report/python_peer.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/syscall.h"
#include "bench/report/report.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

extern char** environ;

namespace mproc::bench {
namespace {

bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string FindOnPath(const std::string& prog) {
  if (prog.find('/') != std::string::npos) return IsFile(prog) ? prog : "";
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string cand = absl::StrCat(dir, "/", prog);
    if (::access(cand.c_str(), X_OK) == 0) return cand;
  }
  return "";
}

std::string FindScript(const std::string& given) {
  if (!given.empty()) return IsFile(given) ? given : "";
  const std::string rel = "bench/peers/cpython_mp.py";
  std::vector<std::string> cands = {rel};  // bazel run / bazel test: cwd is the runfiles tree
  if (const char* rf = std::getenv("RUNFILES_DIR")) cands.push_back(absl::StrCat(rf, "/mproc/", rel));
  cands.push_back(absl::StrCat(SelfExe(), ".runfiles/mproc/", rel));
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) cands.push_back(absl::StrCat(ws, "/", rel));
  for (const std::string& c : cands) {
    if (IsFile(c)) return c;
  }
  return "";
}

const google::protobuf::Value* Field(const google::protobuf::Struct& s, const char* key) {
  auto it = s.fields().find(key);
  return it == s.fields().end() ? nullptr : &it->second;
}

}  // namespace

PeerRun RunPythonPeer(const std::string& python, const std::string& script_flag, bool quick,
                      const std::vector<std::string>& only) {
  PeerRun run;
  const std::string py = FindOnPath(python);
  if (py.empty()) {
    run.skipped = absl::StrCat(python, " not found on PATH: CPython section skipped");
    return run;
  }
  const std::string script = FindScript(script_flag);
  if (script.empty()) {
    run.skipped = "bench/peers/cpython_mp.py not found";
    return run;
  }
  std::vector<std::string> args = {py, script};
  if (quick) args.push_back("--quick");
  if (!only.empty()) args.push_back("--only=" + absl::StrJoin(only, ","));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    run.skipped = "pipe2 failed";
    return run;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::fprintf(stderr, "running the CPython peer: %s\n", absl::StrJoin(args, " ").c_str());
  std::fflush(nullptr);
  pid_t pid;
  int rc = ::posix_spawn(&pid, py.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    run.skipped = absl::StrCat("cannot start ", py, ": errno ", rc);
    return run;
  }
  std::string text;
  char buf[8192];
  ssize_t n;
  while ((n = RetryEintr([&] { return ::read(out[0], buf, sizeof(buf)); })) > 0) {
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  RetryEintr([&] { return ::waitpid(pid, &status, 0); });

  std::istringstream lines(text);
  std::string line;
  bool header = false;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    google::protobuf::Struct obj;
    if (!google::protobuf::util::JsonStringToMessage(line, &obj).ok()) {
      std::fprintf(stderr, "CPython peer: unparseable line: %s\n", line.c_str());
      continue;
    }
    if (!header) {
      header = true;
      if (const auto* v = Field(obj, "version")) run.version = "CPython " + v->string_value();
      if (const auto* m = Field(obj, "default_start_method")) {
        run.version += " (default start method " + m->string_value() + ")";
      }
      continue;
    }
    const auto* id = Field(obj, "row");
    if (id == nullptr) continue;
    RowResult r;
    if (const auto* sk = Field(obj, "skipped")) r.skipped = sk->string_value();
    if (const auto* s = Field(obj, "samples")) {
      for (const auto& v : s->list_value().values()) r.samples.push_back(v.number_value());
    }
    if (const auto* note = Field(obj, "note")) r.note = note->string_value();
    run.rows[id->string_value()] = std::move(r);
  }
  if (!header) {
    run.skipped = absl::StrCat("the CPython peer printed nothing (exit status ", status, ")");
  }
  return run;
}

}  // namespace mproc::bench
