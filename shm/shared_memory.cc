#include "shm/shared_memory.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "base/mutex.h"
#include "base/process_id.h"
#include "base/status.h"
#include "base/syscall.h"

namespace mproc {
namespace {

constexpr std::string_view kPrefix = "mproc.";
constexpr off_t kAttachedByte = 0;
constexpr off_t kCreatorByte = 1;

// OFD lock on [start, start+len). Returns 0, or the errno.
int OfdLock(int fd, short type, off_t start, off_t len, bool wait) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  fl.l_pid = 0;
  int r = RetryEintr([&] { return ::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl); });
  return r == 0 ? 0 : errno;
}

absl::Status ValidateName(std::string_view& name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  if (name.empty()) return absl::InvalidArgumentError("shared memory name is empty");
  if (name.size() > 200) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory name is longer than 200 bytes: ", name.size()));
  }
  if (name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory name must not contain '/' or NUL or be '.' or '..': \"",
        absl::CHexEscape(AbslView(name)), "\""));
  }
  return absl::OkStatus();
}

std::string PathFor(const std::string& dir, std::string_view name) {
  return absl::StrCat(dir, "/", AbslView(kPrefix), AbslView(name));
}

// The creator locks of this process: a duplicate of each created view's descriptor (same
// open file description, so the same locks) per segment created here and not yet unlinked,
// keyed by path. It keeps the creator's locks after the view closes. (An entry can go stale
// when another process unlinks the name; a stale entry only makes this process skip one
// reclaim attempt, and it is dropped by the next prune or by a Create/Unlink of that path.)
struct CreatorRegistry {
  Mutex mu;
  std::map<std::string, UniqueFd> fds ABSL_GUARDED_BY(mu);
  std::map<std::string, int64_t> last_sweep_ns ABSL_GUARDED_BY(mu);  // per directory
  size_t prune_at ABSL_GUARDED_BY(mu) = 64;

  // Drops entries whose file someone else unlinked (nlink 0), so their memory can go.
  // Amortised: runs when the registry has doubled since the last prune.
  void MaybePruneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (fds.size() < prune_at) return;
    for (auto it = fds.begin(); it != fds.end();) {
      struct stat st;
      if (::fstat(it->second.get(), &st) != 0 || st.st_nlink == 0) {
        it = fds.erase(it);
      } else {
        ++it;
      }
    }
    prune_at = std::max<size_t>(64, 2 * fds.size());
  }
};

CreatorRegistry& Registry() {
  static auto* r = new CreatorRegistry;  // never destroyed: used until _exit
  return *r;
}

// Unlinks `path` if nobody holds either lock byte of the file it names. The check runs on a
// fresh open file description, so a descriptor inherited across fork (which shares its
// holder's locks) still counts as attached. Returns true when it unlinked.
bool TryReclaim(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.ok()) return false;
  if (OfdLock(fd.get(), F_WRLCK, kAttachedByte, 2, /*wait=*/false) != 0) return false;
  // Holding both bytes: no view can become attached (Attach waits for a read lock, then finds
  // nlink 0). Make sure the name still refers to the locked file before removing it.
  struct stat st;
  struct stat by_name;
  if (::fstat(fd.get(), &st) != 0 || ::lstat(path.c_str(), &by_name) != 0 ||
      by_name.st_dev != st.st_dev || by_name.st_ino != st.st_ino) {
    return false;
  }
  return ::unlink(path.c_str()) == 0;
}

int SweepDirectory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  int reclaimed = 0;
  std::vector<std::string> candidates;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n.substr(0, kPrefix.size()) == kPrefix && (e->d_type == DT_REG || e->d_type == DT_UNKNOWN)) {
      candidates.emplace_back(absl::StrCat(dir, "/", AbslView(n)));
    }
  }
  ::closedir(d);
  for (const std::string& path : candidates) {
    if (TryReclaim(path)) ++reclaimed;
  }
  return reclaimed;
}

int64_t MonotonicNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::string RandomName() {
  uint8_t b[8];
  size_t got = 0;
  while (got < sizeof(b)) {
    ssize_t n = ::getrandom(b + got, sizeof(b) - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string s = "mproc_";
  for (uint8_t x : b) absl::StrAppendFormat(&s, "%02x", x);
  return s;
}

absl::StatusOr<Mapping> MapFd(int fd, size_t size, const std::string& path) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoToStatus(errno, absl::StrCat("mmap(", path, ", ", size, ")"));
  return Mapping::Adopt(p, size);
}

}  // namespace

std::string SharedMemory::Directory(const SharedMemoryOptions& options) {
  if (!options.dir.empty()) return options.dir;
  if (const char* env = std::getenv("MPROC_SHM_DIR"); env != nullptr && *env != '\0') return env;
  return "/dev/shm";
}

SharedMemory::SharedMemory(std::string name, std::string path, UniqueFd fd, Mapping mapping)
    : name_(std::move(name)),
      path_(std::move(path)),
      view_(std::make_shared<View>(View{std::move(fd), std::move(mapping)})),
      owner_pid_(CurrentPid()) {}

SharedMemory::SharedMemory(SharedMemory&& o) noexcept
    : name_(std::move(o.name_)),
      path_(std::move(o.path_)),
      view_(std::move(o.view_)),
      owner_pid_(std::exchange(o.owner_pid_, 0)) {}

SharedMemory& SharedMemory::operator=(SharedMemory&& o) noexcept {
  if (this != &o) {
    Close();
    name_ = std::move(o.name_);
    path_ = std::move(o.path_);
    view_ = std::move(o.view_);
    owner_pid_ = std::exchange(o.owner_pid_, 0);
  }
  return *this;
}

SharedMemory& SharedMemory::operator=(const SharedMemory& o) {
  if (this != &o) {
    Close();
    name_ = o.name_;
    path_ = o.path_;
    view_ = o.view_;
    owner_pid_ = o.owner_pid_;
  }
  return *this;
}

SharedMemory::~SharedMemory() { Close(); }

absl::StatusOr<SharedMemory> SharedMemory::Create(size_t size, std::string_view name,
                                                  const SharedMemoryOptions& options) {
  if (size == 0) return absl::InvalidArgumentError("shared memory size must be positive");
  const bool random_name = name.empty();
  if (!random_name) MPROC_RETURN_IF_ERROR(ValidateName(name));
  const std::string dir = Directory(options);

  CreatorRegistry& reg = Registry();
  {
    MutexLock lock(&reg.mu);
    reg.MaybePruneLocked();
    int64_t now = MonotonicNs();
    auto [it, first] = reg.last_sweep_ns.try_emplace(dir, now);
    if (first || now - it->second > 1000000000) {
      it->second = now;
      SweepDirectory(dir);
    }
  }

  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd.ok()) return ErrnoToStatus(errno, absl::StrCat("open(", dir, ", O_TMPFILE)"));
  if (RetryEintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("ftruncate(shared memory in ", dir, ", ", size, ")"));
  }
  if (options.reserve == Segment::Reserve::kEager) {
    int r = RetryEintr([&] { return ::fallocate(fd.get(), 0, 0, static_cast<off_t>(size)); });
    if (r != 0) {
      int err = errno;
      if (err == ENOSPC || err == ENOMEM) {
        return absl::ResourceExhaustedError(
            absl::StrCat("shared memory: cannot reserve ", size, " bytes in ", dir,
                         " (tmpfs/memory exhausted: ", ErrnoName(err), ")"));
      }
      return ErrnoToStatus(err, absl::StrCat("fallocate(shared memory in ", dir, ")"));
    }
  }
  // "Attached" and "creator alive" at once, on this open file description.
  if (int err = OfdLock(fd.get(), F_RDLCK, kAttachedByte, 2, false); err != 0) {
    return ErrnoToStatus(err, "fcntl(F_OFD_SETLK, shared memory creator lock)");
  }
  MPROC_ASSIGN_OR_RETURN(Mapping mapping, MapFd(fd.get(), size, dir));

  // Publish under the name; EEXIST means the name is taken.
  std::string proc_path = absl::StrCat("/proc/self/fd/", fd.get());
  std::string chosen;
  std::string path;
  for (int attempt = 0;; ++attempt) {
    chosen = random_name ? RandomName() : std::string(name);
    path = PathFor(dir, chosen);
    if (::linkat(AT_FDCWD, proc_path.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      break;
    }
    int err = errno;
    if (err == EEXIST && random_name && attempt < 100) continue;
    if (err == EEXIST) {
      return absl::AlreadyExistsError(
          absl::StrCat("shared memory \"", chosen, "\" already exists (", path, ")"));
    }
    return ErrnoToStatus(err, absl::StrCat("linkat(", path, ")"));
  }
  UniqueFd keep(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!keep.ok()) {
    int err = errno;
    ::unlink(path.c_str());
    return ErrnoToStatus(err, absl::StrCat("fcntl(F_DUPFD_CLOEXEC, ", path, ")"));
  }
  {
    MutexLock lock(&reg.mu);
    reg.fds[path] = std::move(keep);
  }
  return SharedMemory(std::move(chosen), std::move(path), std::move(fd), std::move(mapping));
}

absl::StatusOr<SharedMemory> SharedMemory::Attach(std::string_view name,
                                                  const SharedMemoryOptions& options) {
  MPROC_RETURN_IF_ERROR(ValidateName(name));
  std::string path = PathFor(Directory(options), name);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.ok()) {
    int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("shared memory \"", AbslView(name), "\" does not exist (", path, ")"));
    }
    return ErrnoToStatus(err, absl::StrCat("open(", path, ")"));
  }
  // Waits only while a reclaimer holds the write lock (a few syscalls).
  if (int err = OfdLock(fd.get(), F_RDLCK, kAttachedByte, 1, /*wait=*/true); err != 0) {
    return ErrnoToStatus(err, absl::StrCat("fcntl(F_OFD_SETLKW, ", path, ")"));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, absl::StrCat("fstat(", path, ")"));
  if (st.st_nlink == 0) {
    return absl::NotFoundError(absl::StrCat("shared memory \"", AbslView(name),
                                            "\" was reclaimed while attaching (", path, ")"));
  }
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not an mproc shared memory segment (size ", st.st_size, ")"));
  }
  MPROC_ASSIGN_OR_RETURN(Mapping mapping,
                         MapFd(fd.get(), static_cast<size_t>(st.st_size), path));
  return SharedMemory(std::string(name), std::move(path), std::move(fd), std::move(mapping));
}

absl::StatusOr<SharedMemory> SharedMemory::Adopt(std::string name, std::string path, UniqueFd fd) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, absl::StrCat("fstat(", path, ")"));
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("received descriptor is not a shared memory segment (", path, ")"));
  }
  MPROC_ASSIGN_OR_RETURN(Mapping mapping, MapFd(fd.get(), static_cast<size_t>(st.st_size), path));
  return SharedMemory(std::move(name), std::move(path), std::move(fd), std::move(mapping));
}

void SharedMemory::Close() {
  if (!view_) return;
  const bool last = view_.use_count() == 1;
  view_.reset();  // the last handle unmaps and closes the view
  if (!last) return;  // other handles of this view remain: still attached
  if (owner_pid_ != CurrentPid()) return;  // a fork child's copy: inert
  CreatorRegistry& reg = Registry();
  MutexLock lock(&reg.mu);
  if (reg.fds.count(path_) != 0) return;  // created here, not unlinked: not an orphan
  TryReclaim(path_);
}

absl::Status SharedMemory::Unlink() {
  if (name_.empty()) return absl::FailedPreconditionError("SharedMemory is empty");
  SharedMemoryOptions options;
  options.dir = path_.substr(0, path_.rfind('/'));
  return Unlink(name_, options);
}

absl::Status SharedMemory::Unlink(std::string_view name, const SharedMemoryOptions& options) {
  MPROC_RETURN_IF_ERROR(ValidateName(name));
  std::string path = PathFor(Directory(options), name);
  if (::unlink(path.c_str()) != 0) {
    int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("shared memory \"", AbslView(name),
                                              "\" does not exist or was already unlinked (",
                                              path, ")"));
    }
    return ErrnoToStatus(err, absl::StrCat("unlink(", path, ")"));
  }
  CreatorRegistry& reg = Registry();
  MutexLock lock(&reg.mu);
  reg.fds.erase(path);  // releases this process's creator lock, if it created the segment
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SharedMemoryInfo>> SharedMemory::List(const SharedMemoryOptions& options) {
  const std::string dir = Directory(options);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoToStatus(errno, absl::StrCat("opendir(", dir, ")"));
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n.substr(0, kPrefix.size()) == kPrefix && (e->d_type == DT_REG || e->d_type == DT_UNKNOWN)) {
      names.emplace_back(n.substr(kPrefix.size()));
    }
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  // Whether another open file description holds a lock on `byte` (F_OFD_GETLK reports the
  // first lock that would block a write lock; this description holds none).
  auto held = [](int fd, off_t byte) {
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    return ::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  };
  std::vector<SharedMemoryInfo> out;
  for (std::string& name : names) {
    SharedMemoryInfo info;
    info.path = PathFor(dir, name);
    UniqueFd fd(::open(info.path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    struct stat st;
    if (!fd.ok() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    info.name = std::move(name);
    info.size = static_cast<uint64_t>(st.st_size);
    info.attached = held(fd.get(), kAttachedByte);
    info.creator_alive = held(fd.get(), kCreatorByte);
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<int> SharedMemory::ReclaimOrphans(const SharedMemoryOptions& options) {
  std::string dir = Directory(options);
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoToStatus(errno, absl::StrCat("stat(", dir, ")"));
  return SweepDirectory(dir);
}

}  // namespace mproc
