#include "bench/report/python_peer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/fork_child.h"
#include "base/syscall.h"
#include "bench/report/report.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace mproc::bench {
namespace {

bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

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

std::string FindRunfile(const std::string& rel) {
  std::vector<std::string> cands = {rel};  // bazel run / bazel test: cwd is the runfiles tree
  if (const char* rf = std::getenv("RUNFILES_DIR")) cands.push_back(absl::StrCat(rf, "/mproc/", rel));
  cands.push_back(absl::StrCat(SelfExe(), ".runfiles/mproc/", rel));
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) cands.push_back(absl::StrCat(ws, "/", rel));
  for (const std::string& c : cands) {
    if (IsFile(c)) return c;
  }
  return "";
}

namespace {

std::string FindScript(const std::string& given) {
  if (!given.empty()) return IsFile(given) ? given : "";
  return FindRunfile("bench/peers/cpython_mp.py");
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

  std::fprintf(stderr, "running the CPython peer: %s\n", absl::StrJoin(args, " ").c_str());
  return RunPeerProgram(args, nullptr, "CPython ");
}

PeerRun RunPeerProgram(const std::vector<std::string>& args, const std::vector<std::string>* env,
                       const std::string& version_prefix) {
  PeerRun run;
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    run.skipped = "pipe2 failed";
    return run;
  }
  const pid_t pid = SpawnProgram(args, {.out = out[1]}, env);
  const int err = errno;
  ::close(out[1]);
  if (pid < 0) {
    ::close(out[0]);
    run.skipped = absl::StrCat("cannot start ", args[0], ": errno ", err);
    return run;
  }
  const std::string text = ReadToEnd(out[0]);
  ::close(out[0]);
  const int exit_code = ReapChild(pid);

  std::istringstream lines(text);
  std::string line;
  bool header = false;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    google::protobuf::Struct obj;
    if (!google::protobuf::util::JsonStringToMessage(line, &obj).ok()) {
      std::fprintf(stderr, "%s: unparseable line: %s\n", args[0].c_str(), line.c_str());
      continue;
    }
    if (!header) {
      header = true;
      if (const auto* v = Field(obj, "version")) run.version = version_prefix + v->string_value();
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
    run.skipped = absl::StrCat(args[0], " printed nothing (exit code ", exit_code, ")");
  }
  return run;
}

}  // namespace mproc::bench
