// tools/mproc — mproc's live objects on this machine, the way ipcs lists System V IPC.
//
//   mproc [ls]      named SharedMemory segments (size, state read from their lock bytes, the
//                   processes that have them open), fork servers and managers (their socket,
//                   the processes serving it, the owner that started them, live or stale)
//   mproc reclaim   unlinks orphaned segments (creator gone, attached nowhere) and removes
//                   the socket directories of servers whose owner is gone and which no longer
//                   listen; never touches anything in use
//   mproc report [ARGS...]   runs the benchmark report ($MPROC_REPORT, or under `bazel run`,
//                   `bazel run -c opt //bench:report -- ARGS`)
//
// Flags: --shm_dir=DIR (default $MPROC_SHM_DIR, else /dev/shm) and --tmpdir=DIR (where the
// socket directories are; default: mproc's own choice, $TMPDIR when short enough, and /tmp).
// Only processes of this user are visible (as in /proc). Run with
//   bazel run //tools:mproc -- ls      or install bazel-bin/tools/mproc.

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/owner.h"
#include "base/socket_dir.h"
#include "shm/shared_memory.h"

namespace mproc {
namespace {

constexpr char kUsage[] =
    "usage: mproc [ls | reclaim | report [ARGS...]] [--shm_dir=DIR] [--tmpdir=DIR]\n";

struct Flags {
  std::string command = "ls";
  std::string shm_dir;
  std::vector<std::string> tmpdirs;
  std::vector<std::string> rest;  // report's arguments
};

// A /proc entry's pid as this process's pid namespace numbers it: the last NSpid field (a
// /proc mounted for an outer namespace, as in a sandbox, numbers processes differently);
// 0 for a process outside this namespace.
pid_t PidInOurNamespace(pid_t proc_pid) {
  std::ifstream f(absl::StrCat("/proc/", proc_pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    if (!absl::StartsWith(line, "NSpid:")) continue;
    std::vector<std::string> ids = absl::StrSplit(line.substr(6), absl::ByAnyChar(" \t"), absl::SkipEmpty());
    pid_t pid = 0;
    if (ids.empty() || !absl::SimpleAtoi(ids.back(), &pid)) return proc_pid;
    // Inside a nested namespace the innermost number is ours only if our own status agrees
    // on the depth: compare with this process's NSpid length.
    static const size_t our_depth = [] {
      std::ifstream self("/proc/self/status");
      std::string l;
      while (std::getline(self, l)) {
        if (absl::StartsWith(l, "NSpid:")) {
          return static_cast<size_t>(std::vector<std::string>(
              absl::StrSplit(l.substr(6), absl::ByAnyChar(" \t"), absl::SkipEmpty())).size());
        }
      }
      return size_t{1};
    }();
    return ids.size() == our_depth ? pid : 0;
  }
  return proc_pid;
}

std::string FileKey(const struct stat& st) {
  return absl::StrCat("file:", st.st_dev, ":", st.st_ino);
}

// Which processes (of those this user may inspect) have each file or socket open: one pass
// over /proc/*/fd, keyed by FileKey for files and by the link ("socket:[123]") for sockets.
std::map<std::string, std::set<pid_t>> OpenFiles() {
  std::map<std::string, std::set<pid_t>> out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (struct dirent* e = ::readdir(proc)) {
    pid_t proc_pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &proc_pid)) continue;
    const pid_t pid = PidInOurNamespace(proc_pid);
    if (pid == 0) continue;
    std::string fd_dir = absl::StrCat("/proc/", proc_pid, "/fd");
    DIR* fds = ::opendir(fd_dir.c_str());
    if (fds == nullptr) continue;  // another user's, or gone
    while (struct dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      char target[4096];
      std::string link = absl::StrCat(fd_dir, "/", f->d_name);
      ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      std::string t(target, static_cast<size_t>(n));
      if (absl::StartsWith(t, "socket:")) {
        out[t].insert(pid);
        continue;
      }
      // Files by identity, not by name: a segment's creator made it unnamed (O_TMPFILE), so
      // its link reads "/dev/shm/#123 (deleted)" although the file now has a name.
      struct stat st;
      if (::stat(link.c_str(), &st) == 0) out[FileKey(st)].insert(pid);
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return out;
}

// Listening Unix sockets by path, from /proc/net/unix: path -> "socket:[inode]".
std::map<std::string, std::string> ListeningSockets() {
  std::map<std::string, std::string> out;
  std::ifstream f("/proc/net/unix");
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    // Num RefCount Protocol Flags Type St Inode Path
    std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (cols.size() < 8) continue;
    uint32_t flags = 0;
    if (!absl::SimpleHexAtoi(cols[3], &flags) || (flags & 0x10000) == 0) continue;  // __SO_ACCEPTCON
    out[cols[7]] = absl::StrCat("socket:[", cols[6], "]");
  }
  return out;
}

// A zombie owner is dead (it holds nothing any more), unlike kill(pid, 0)'s answer.
bool Alive(pid_t pid) { return ProcessAlive(pid); }

std::string Pids(const std::set<pid_t>& pids) {
  return pids.empty() ? "-" : absl::StrJoin(pids, ",");
}

std::vector<std::string> TmpDirs(const Flags& flags) {
  if (!flags.tmpdirs.empty()) return flags.tmpdirs;
  std::vector<std::string> dirs = {SocketDirBase()};
  if (dirs[0] != "/tmp") dirs.push_back("/tmp");
  return dirs;
}

struct ServerDir {
  std::string dir, socket, kind;
  pid_t owner = 0;
  bool listening = false;
  std::set<pid_t> holders;  // processes holding the listening socket
};

std::vector<ServerDir> FindServerDirs(const Flags& flags,
                                      const std::map<std::string, std::set<pid_t>>& open) {
  std::map<std::string, std::string> listening = ListeningSockets();
  std::vector<ServerDir> out;
  for (const std::string& base : TmpDirs(flags)) {
    DIR* d = ::opendir(base.c_str());
    if (d == nullptr) continue;
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      std::optional<SocketDirName> parsed = ParseSocketDirName(n);
      if (!parsed) continue;
      ServerDir s;
      s.dir = absl::StrCat(base, "/", n);
      struct stat st;
      if (::lstat(s.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) continue;
      s.socket = s.dir + "/socket";
      s.kind = parsed->kind;
      s.owner = parsed->owner;
      auto it = listening.find(s.socket);
      s.listening = it != listening.end();
      if (s.listening) {
        auto holders = open.find(it->second);
        if (holders != open.end()) s.holders = holders->second;
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

int List(const Flags& flags) {
  SharedMemoryOptions opts;
  opts.dir = flags.shm_dir;
  std::map<std::string, std::set<pid_t>> open = OpenFiles();
  absl::StatusOr<std::vector<SharedMemoryInfo>> segments = SharedMemory::List(opts);
  std::printf("------ mproc shared memory: %s ------\n", SharedMemory::Directory(opts).c_str());
  if (!segments.ok()) {
    std::printf("(cannot list: %s)\n", segments.status().ToString().c_str());
  } else {
    std::printf("%-32s %12s  %-14s %s\n", "name", "bytes", "state", "open by");
    for (const SharedMemoryInfo& s : *segments) {
      const char* state = s.orphan()          ? "orphan"
                          : s.creator_alive ? "creator alive"
                                            : "attached";
      struct stat st;
      auto it = ::stat(s.path.c_str(), &st) == 0 ? open.find(FileKey(st)) : open.end();
      std::printf("%-32s %12llu  %-14s %s\n", s.name.c_str(), static_cast<unsigned long long>(s.size),
                  state, it == open.end() ? "-" : Pids(it->second).c_str());
    }
  }
  std::vector<ServerDir> servers = FindServerDirs(flags, open);
  for (const char* kind : {"forkserver", "manager"}) {
    std::printf("\n------ mproc %s ------\n", std::string(kind) == "manager" ? "managers" : "fork servers");
    std::printf("%-56s %-12s %-16s %s\n", "socket", "server", "owner", "state");
    for (const ServerDir& s : servers) {
      if (s.kind != kind) continue;
      std::string owner = absl::StrCat(s.owner, Alive(s.owner) ? " (alive)" : " (gone)");
      const char* state = s.listening ? "live" : (Alive(s.owner) ? "not listening" : "stale");
      std::printf("%-56s %-12s %-16s %s\n", s.socket.c_str(), Pids(s.holders).c_str(),
                  owner.c_str(), state);
    }
  }
  return 0;
}

int Reclaim(const Flags& flags) {
  SharedMemoryOptions opts;
  opts.dir = flags.shm_dir;
  absl::StatusOr<int> segments = SharedMemory::ReclaimOrphans(opts);
  if (!segments.ok()) {
    std::fprintf(stderr, "mproc reclaim: %s\n", segments.status().ToString().c_str());
    return 1;
  }
  int dirs = 0;
  for (const ServerDir& s : FindServerDirs(flags, {})) {
    if (s.listening || Alive(s.owner)) continue;  // in use, or its owner may still clean up
    ::unlink(s.socket.c_str());
    if (::rmdir(s.dir.c_str()) == 0) {
      ++dirs;
    } else {
      std::fprintf(stderr, "mproc reclaim: %s: %s (left as it is)\n", s.dir.c_str(), std::strerror(errno));
    }
  }
  std::printf("reclaimed %d shared memory segment%s and %d socket director%s\n", *segments,
              *segments == 1 ? "" : "s", dirs, dirs == 1 ? "y" : "ies");
  return 0;
}

int Report(const Flags& flags) {
  std::vector<std::string> args;
  if (const char* r = std::getenv("MPROC_REPORT"); r != nullptr && *r != '\0') {
    args.push_back(r);
  } else if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY"); ws != nullptr) {
    if (::chdir(ws) != 0) {
      std::fprintf(stderr, "mproc report: chdir(%s): %s\n", ws, std::strerror(errno));
      return 1;
    }
    args = {"bazel", "run", "-c", "opt", "//bench:report", "--"};
  } else {
    std::fprintf(stderr,
                 "mproc report: set MPROC_REPORT to the report binary, or run it from the "
                 "workspace: bazel run //tools:mproc -- report (or bazel run -c opt "
                 "//bench:report)\n");
    return 2;
  }
  args.insert(args.end(), flags.rest.begin(), flags.rest.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  ::execvp(argv[0], argv.data());
  std::fprintf(stderr, "mproc report: cannot run %s: %s\n", argv[0], std::strerror(errno));
  return 1;
}

}  // namespace
}  // namespace mproc

int main(int argc, char** argv) {
  mproc::Flags flags;
  bool have_command = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (have_command && flags.command == "report") {
      flags.rest.push_back(a);  // everything after `report` is the report's
    } else if (absl::StartsWith(a, "--shm_dir=")) {
      flags.shm_dir = a.substr(10);
    } else if (absl::StartsWith(a, "--tmpdir=")) {
      flags.tmpdirs.push_back(a.substr(9));
    } else if (a == "-h" || a == "--help") {
      std::fputs(mproc::kUsage, stdout);
      return 0;
    } else if (!have_command && (a == "ls" || a == "reclaim" || a == "report")) {
      flags.command = a;
      have_command = true;
    } else {
      std::fprintf(stderr, "mproc: unknown argument \"%s\"\n%s", a.c_str(), mproc::kUsage);
      return 2;
    }
  }
  if (flags.command == "reclaim") return mproc::Reclaim(flags);
  if (flags.command == "report") return mproc::Report(flags);
  return mproc::List(flags);
}
