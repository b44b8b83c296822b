#include "shm/shared_bytes.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "base/features.h"
#include "base/mutex.h"
#include "base/process_id.h"
#include "base/status.h"
#include "base/syscall.h"
#include "shm/segment.h"

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

namespace mproc {
namespace shm_internal {

// A buffer as its allocating process holds it: the memfd's read-write description (never
// sent) and the one writable mapping, made before the seal.
struct Block {
  UniqueFd fd;
  Mapping map;
  size_t capacity = 0;
  size_t weight = 0;  // memory it holds while idle (see Weight)
  pid_t owner = 0;
  bool recyclable = true;  // false once a holder cannot be told apart (no /proc)
};

// A received memfd mapped read-only (through a description of this process's own, so the
// mapping does not hold the travelling description's lock).
struct RecvMap {
  Mapping map;
  dev_t dev = 0;
  ino_t ino = 0;
  size_t capacity = 0;
  size_t weight = 0;  // memory the memfd held when last received (st_blocks)
};

struct Rep {
  std::shared_ptr<Block> block;   // in the allocating process
  std::shared_ptr<RecvMap> recv;  // in a receiver
  UniqueFd handle;                // the locked read-only description that travels
  ~Rep() {
    handle.Reset();  // first: the lock goes (when this was its last holder) ...
    block.reset();   // ... before the block is offered for reuse
  }
};

absl::Status CheckView(const void* p, size_t size, size_t t_size, size_t t_align) {
  if (size % t_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a buffer of ", size, " bytes is not a whole number of ", t_size, "-byte elements"));
  }
  if (reinterpret_cast<uintptr_t>(p) % t_align != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the buffer is not aligned to ", t_align, " bytes"));
  }
  return absl::OkStatus();
}

namespace {

constexpr size_t kPage = 4096;
constexpr uint64_t kMaxSize = uint64_t{1} << 40;
constexpr size_t kDefaultLimit = SharedBytes::kDefaultLimit;
constexpr size_t kWeighAbove = size_t{4} << 20;  // smaller buffers weigh their capacity
constexpr int kMaxProbes = 8;                    // idle buffers of a capacity tried per Allocate
constexpr size_t kMaxIdlePerClass = 16;          // idle buffers kept per capacity
// Received mappings kept: at most this many, spanning at most this much address space (a
// sparse buffer weighs little but still takes its whole capacity of address space).
constexpr size_t kMaxCached = 256;
constexpr size_t kMaxCachedSpan = size_t{1} << 40;

size_t CapacityFor(size_t size) {
  return std::bit_ceil(std::max(kPage, (size + kPage - 1) & ~(kPage - 1)));
}

std::string ProcPath(int fd) {
  char path[40];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return path;
}

// The memory a memfd holds: its allocated pages, at least one (a buffer of 1 GiB whose
// producer wrote one page weighs 4 KiB); buffers up to 4 MiB weigh their capacity. Limits
// count this, not capacity.
size_t WeightOf(size_t capacity, blkcnt_t blocks) {
  if (capacity <= kWeighAbove) return capacity;
  return std::clamp(static_cast<size_t>(blocks) * 512, kPage, capacity);
}
size_t Weight(int fd, size_t capacity) {
  if (capacity <= kWeighAbove) return capacity;
  struct stat st;
  if (::fstat(fd, &st) != 0) return capacity;
  return WeightOf(capacity, st.st_blocks);
}

// Whether received mappings may be cached by inode: from Linux 5.9 each shmem mount numbers
// its inodes uniquely (64-bit); before, memfds drew from a global 32-bit counter that wraps,
// so a new memfd could take a cached one's number.
bool InodesAreUnique() {
  static const bool unique = [] {
    struct utsname u;
    int major = 0, minor = 0;
    if (::uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
    return major > 5 || (major == 5 && minor >= 9);
  }();
  return unique;
}

// Whether a description other than `fd`'s holds the lock on byte 0: someone holds the buffer.
bool HeldElsewhere(int fd) {
  struct flock q = {};
  q.l_type = F_WRLCK;
  q.l_whence = SEEK_SET;
  q.l_start = 0;
  q.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &q) != 0) return true;  // cannot tell: never reuse
  return q.l_type != F_UNLCK;
}

// The allocating side: idle buffers by capacity, newest last.
class Pool {
 public:
  // An idle buffer of `capacity` that no other process holds, or null.
  Block* Take(size_t capacity) {
    MutexLock l(&mu_);
    auto it = idle_.find(capacity);
    if (it == idle_.end()) return nullptr;
    std::deque<Block*>& q = it->second;
    int probes = 0;
    for (size_t i = q.size(); i-- > 0 && probes < kMaxProbes; ++probes) {
      Block* b = q[i];
      if (HeldElsewhere(b->fd.get())) continue;
      q.erase(q.begin() + static_cast<std::ptrdiff_t>(i));
      idle_bytes_ -= b->weight;
      if (q.empty()) idle_.erase(it);
      return b;
    }
    return nullptr;
  }

  // Keeps `b` for reuse, or frees it. Frees what no longer fits under the limit.
  void Return(Block* b) {
    std::vector<Block*> drop;
    if (b->owner == CurrentPid()) b->weight = Weight(b->fd.get(), b->capacity);
    {
      MutexLock l(&mu_);
      if (b->owner != CurrentPid() || !b->recyclable || b->weight > limit_) {
        drop.push_back(b);
      } else {
        std::deque<Block*>& q = idle_[b->capacity];
        if (q.size() >= kMaxIdlePerClass) {
          drop.push_back(q.front());
          idle_bytes_ -= q.front()->weight;
          q.pop_front();
        }
        q.push_back(b);
        idle_bytes_ += b->weight;
        TrimLocked(&drop);
      }
    }
    for (Block* d : drop) delete d;
  }

  // Sets the limit and trims to it; with `once`, trims to `bytes` and keeps the limit.
  void Trim(size_t bytes, bool once) {
    std::vector<Block*> drop;
    {
      MutexLock l(&mu_);
      const size_t keep = limit_;
      limit_ = bytes;
      TrimLocked(&drop, /*reweigh=*/true);
      if (once) limit_ = keep;
    }
    for (Block* d : drop) delete d;
  }

  size_t IdleBytes() {
    MutexLock l(&mu_);
    return idle_bytes_;
  }

  // Held across fork (pthread_atfork, below).
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION(mu_) { mu_.Lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION(mu_) { mu_.Unlock(); }
  // In a fork child: the parent's idle buffers are the parent's to reuse; drop the copies.
  void ForgetAfterFork() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto& [cap, q] : idle_) {
      for (Block* b : q) delete b;
    }
    idle_.clear();
    idle_bytes_ = 0;
  }

 private:
  // Frees the oldest idle buffers of the largest capacities until under the limit. Large
  // buffers are weighed again first (at most every 10 ms unless `reweigh`): a holder
  // elsewhere may have touched, and so allocated, pages since the buffer came back.
  void TrimLocked(std::vector<Block*>* drop, bool reweigh = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t now = absl::GetCurrentTimeNanos();
    if (reweigh || now - last_weighed_ns_ >= 10'000'000) {
      last_weighed_ns_ = now;
      idle_bytes_ = 0;
      for (auto& [cap, q] : idle_) {
        for (Block* b : q) {
          if (cap > kWeighAbove) b->weight = Weight(b->fd.get(), cap);
          idle_bytes_ += b->weight;
        }
      }
    }
    while (idle_bytes_ > limit_ && !idle_.empty()) {
      auto it = std::prev(idle_.end());
      std::deque<Block*>& q = it->second;
      drop->push_back(q.front());
      idle_bytes_ -= q.front()->weight;
      q.pop_front();
      if (q.empty()) idle_.erase(it);
    }
  }

  Mutex mu_;
  std::map<size_t, std::deque<Block*>> idle_ ABSL_GUARDED_BY(mu_);
  size_t idle_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t limit_ ABSL_GUARDED_BY(mu_) = kDefaultLimit;
  int64_t last_weighed_ns_ ABSL_GUARDED_BY(mu_) = 0;
};

// The receiving side: read-only mappings of received memfds, by inode, least recently used
// first.
class Cache {
 public:
  // The cached mapping of the memfd `st` describes, or a new one (cached when it fits).
  absl::StatusOr<std::shared_ptr<RecvMap>> Map(int fd, const struct stat& st) {
    const Key key{st.st_dev, st.st_ino};
    const size_t capacity = static_cast<size_t>(st.st_size);
    const size_t weight = WeightOf(capacity, st.st_blocks);
    if (InodesAreUnique()) {
      std::vector<std::shared_ptr<RecvMap>> drop;  // unmapped outside the lock
      MutexLock l(&mu_);
      auto it = index_.find(key);
      if (it != index_.end() && (*it->second)->capacity == capacity) {
        lru_.splice(lru_.end(), lru_, it->second);
        std::shared_ptr<RecvMap> m = *it->second;
        bytes_ = bytes_ - m->weight + weight;
        m->weight = weight;
        TrimLocked(&drop);
        return m;
      }
    }
    // Map through a description of our own so that the mapping does not keep the travelling
    // description (and its lock) alive once the buffer is dropped; without /proc, map the
    // received one and do not cache it.
    UniqueFd own;
    if (InodesAreUnique()) own = UniqueFd(::open(ProcPath(fd).c_str(), O_RDONLY | O_CLOEXEC));
    const bool cacheable = own.ok();
    void* p = ::mmap(nullptr, capacity, PROT_READ, MAP_SHARED, own.ok() ? own.get() : fd, 0);
    if (p == MAP_FAILED) return ErrnoToStatus(errno, "mmap(received SharedBytes)");
    auto m = std::make_shared<RecvMap>();
    m->map = Mapping::Adopt(p, capacity);
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    m->capacity = capacity;
    m->weight = weight;
    if (!cacheable) return m;
    std::vector<std::shared_ptr<RecvMap>> drop;  // unmapped outside the lock
    {
      MutexLock l(&mu_);
      if (weight > limit_ || capacity > kMaxCachedSpan) return m;
      auto it = index_.find(key);
      if (it != index_.end()) {  // a stale entry (another size), or raced with another thread
        bytes_ -= (*it->second)->weight;
        span_ -= (*it->second)->capacity;
        drop.push_back(std::move(*it->second));
        lru_.erase(it->second);
        index_.erase(it);
      }
      lru_.push_back(m);
      index_[key] = std::prev(lru_.end());
      bytes_ += weight;
      span_ += capacity;
      TrimLocked(&drop);
    }
    return m;
  }

  void Trim(size_t bytes, bool once) {
    std::vector<std::shared_ptr<RecvMap>> drop;
    MutexLock l(&mu_);
    const size_t keep = limit_;
    limit_ = bytes;
    TrimLocked(&drop);
    if (once) limit_ = keep;
  }

  size_t IdleBytes() {
    MutexLock l(&mu_);
    size_t n = 0;
    for (const auto& m : lru_) {
      if (m.use_count() == 1) n += m->weight;
    }
    return n;
  }

  // Held across fork (pthread_atfork, below).
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION(mu_) { mu_.Lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION(mu_) { mu_.Unlock(); }

 private:
  using Key = std::pair<dev_t, ino_t>;
  // Unmaps the least recently used mappings nobody is reading until under the limit.
  void TrimLocked(std::vector<std::shared_ptr<RecvMap>>* drop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto over = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return bytes_ > limit_ || lru_.size() > kMaxCached || span_ > kMaxCachedSpan;
    };
    for (auto it = lru_.begin(); over() && it != lru_.end();) {
      if (it->use_count() != 1) {
        ++it;
        continue;
      }
      bytes_ -= (*it)->weight;
      span_ -= (*it)->capacity;
      index_.erase(Key{(*it)->dev, (*it)->ino});
      drop->push_back(std::move(*it));
      it = lru_.erase(it);
    }
  }

  Mutex mu_;
  std::list<std::shared_ptr<RecvMap>> lru_ ABSL_GUARDED_BY(mu_);
  std::map<Key, std::list<std::shared_ptr<RecvMap>>::iterator> index_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;  // weights of the cached mappings
  size_t span_ ABSL_GUARDED_BY(mu_) = 0;   // their capacities (address space)
  size_t limit_ ABSL_GUARDED_BY(mu_) = kDefaultLimit;
};

// Leaked on purpose: buffers may be dropped from atexit handlers and other static destructors.
struct State {
  Pool pool;
  Cache cache;
};

State& TheState() {
  static State* state = [] {
    auto* s = new State();
    // Both locks are held across fork, taken in one handler and released in another: beyond
    // what the analysis can follow.
    pthread_atfork(
        []() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          TheState().pool.Lock();
          TheState().cache.Lock();
        },
        []() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          TheState().cache.Unlock();
          TheState().pool.Unlock();
        },
        []() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          TheState().cache.Unlock();
          TheState().pool.ForgetAfterFork();
          TheState().pool.Unlock();
        });
    return s;
  }();
  return *state;
}

Pool& ThePool() { return TheState().pool; }
Cache& TheCache() { return TheState().cache; }

void ReturnBlock(Block* b) { ThePool().Return(b); }

absl::StatusOr<std::shared_ptr<Block>> NewBlock(size_t capacity) {
  unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
  if (HasFeature(Feature::kMemfdNoexecSeal)) flags |= MFD_NOEXEC_SEAL;
  UniqueFd fd(::memfd_create("mproc-bytes", flags));
  if (!fd.ok()) return ErrnoToStatus(errno, "memfd_create(SharedBytes)");
  if (RetryEintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(capacity)); }) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("ftruncate(SharedBytes, ", capacity, ")"));
  }
  void* p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) {
    return ErrnoToStatus(errno, absl::StrCat("mmap(SharedBytes, ", capacity, ")"));
  }
  Mapping map = Mapping::Adopt(p, capacity);
  // Sealed before anyone else can see it: the mapping above stays the only writable one.
  if (::fcntl(fd.get(), F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
    if (errno == EINVAL) {
      return absl::FailedPreconditionError(
          "SharedBytes needs F_SEAL_FUTURE_WRITE (Linux 5.1 or later)");
    }
    return ErrnoToStatus(errno, "F_ADD_SEALS(SharedBytes)");
  }
  auto* b = new Block();
  b->fd = std::move(fd);
  b->map = std::move(map);
  b->capacity = capacity;
  b->owner = CurrentPid();
  return std::shared_ptr<Block>(b, ReturnBlock);
}

}  // namespace
}  // namespace shm_internal

using shm_internal::Block;
using shm_internal::Rep;

absl::StatusOr<SharedBytesWriter> SharedBytesWriter::Allocate(size_t size) {
  if (size > shm_internal::kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("SharedBytes of ", size, " bytes: the most is 2^40"));
  }
  const size_t capacity = shm_internal::CapacityFor(size);
  std::shared_ptr<Block> block;
  if (Block* idle = shm_internal::ThePool().Take(capacity)) {
    block.reset(idle, shm_internal::ReturnBlock);
  } else {
    absl::StatusOr<std::shared_ptr<Block>> fresh = shm_internal::NewBlock(capacity);
    if (!fresh.ok()) return fresh.status();
    block = *std::move(fresh);
  }
  SharedBytesWriter w;
  w.data_ = static_cast<std::byte*>(block->map.data());
  w.size_ = size;
  w.block_ = std::move(block);
  return w;
}

SharedBytesWriter::~SharedBytesWriter() = default;

absl::StatusOr<SharedBytes> SharedBytesWriter::Freeze() && {
  if (block_ == nullptr) {
    return absl::FailedPreconditionError("Freeze() on an empty SharedBytesWriter");
  }
  auto rep = std::make_shared<Rep>();
  // A read-only description of our own, locked: it is what travels, and the lock lasts while
  // any holder (or message in flight) still has it.
  rep->handle =
      UniqueFd(::open(shm_internal::ProcPath(block_->fd.get()).c_str(), O_RDONLY | O_CLOEXEC));
  if (!rep->handle.ok()) {
    const int err = errno;
    if (err == EMFILE || err == ENFILE || err == ENOMEM) {
      return ErrnoToStatus(err, "open(SharedBytes description)");
    }
    // No /proc: send a duplicate of the buffer's own description. Holders can no longer be
    // told apart, so the buffer is never reused.
    rep->handle = UniqueFd(::fcntl(block_->fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!rep->handle.ok()) return ErrnoToStatus(errno, "dup(SharedBytes)");
    block_->recyclable = false;
  } else {
    struct flock l = {};
    l.l_type = F_RDLCK;
    l.l_whence = SEEK_SET;
    l.l_start = 0;
    l.l_len = 1;
    if (::fcntl(rep->handle.get(), F_OFD_SETLK, &l) != 0) block_->recyclable = false;
  }
  rep->block = std::move(block_);
  const std::byte* data = data_;
  const size_t size = size_;
  data_ = nullptr;
  size_ = 0;
  return SharedBytes(std::move(rep), data, size);
}

absl::StatusOr<SharedBytes> SharedBytes::CopyOf(std::span<const std::byte> bytes) {
  absl::StatusOr<SharedBytesWriter> w = SharedBytesWriter::Allocate(bytes.size());
  if (!w.ok()) return w.status();
  if (!bytes.empty()) std::memcpy(w->data(), bytes.data(), bytes.size());
  return std::move(*w).Freeze();
}

absl::StatusOr<SharedBytes> SharedBytes::FromDescriptor(UniqueFd fd, uint64_t size) {
  if (!fd.ok()) return absl::InvalidArgumentError("SharedBytes: no descriptor");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, "fstat(received SharedBytes)");
  const int seals = S_ISREG(st.st_mode) ? ::fcntl(fd.get(), F_GET_SEALS) : -1;
  if (seals < 0) {
    return absl::InvalidArgumentError("SharedBytes: the descriptor is not a memfd");
  }
  constexpr int kNeeded = F_SEAL_SHRINK | F_SEAL_GROW;
  if ((seals & kNeeded) != kNeeded || (seals & (F_SEAL_FUTURE_WRITE | F_SEAL_WRITE)) == 0) {
    return absl::InvalidArgumentError(
        "SharedBytes: the memfd is not sealed against shrinking, growing and writing");
  }
  if (st.st_size <= 0 || static_cast<uint64_t>(st.st_size) > shm_internal::kMaxSize ||
      size > static_cast<uint64_t>(st.st_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SharedBytes: a length of ", size, " in a buffer of ", st.st_size, " bytes"));
  }
  absl::StatusOr<std::shared_ptr<shm_internal::RecvMap>> m =
      shm_internal::TheCache().Map(fd.get(), st);
  if (!m.ok()) return m.status();
  auto rep = std::make_shared<Rep>();
  rep->recv = *std::move(m);
  rep->handle = std::move(fd);
  const std::byte* data = static_cast<const std::byte*>(rep->recv->map.data());
  return SharedBytes(std::move(rep), data, static_cast<size_t>(size));
}

int SharedBytes::descriptor() const { return rep_ ? rep_->handle.get() : -1; }

void SharedBytes::SetPoolLimit(size_t bytes) { shm_internal::ThePool().Trim(bytes, false); }
void SharedBytes::SetCacheLimit(size_t bytes) { shm_internal::TheCache().Trim(bytes, false); }
void SharedBytes::ReleaseIdle() {
  shm_internal::ThePool().Trim(0, true);
  shm_internal::TheCache().Trim(0, true);
}
size_t SharedBytes::PoolBytes() { return shm_internal::ThePool().IdleBytes(); }
size_t SharedBytes::CacheBytes() { return shm_internal::TheCache().IdleBytes(); }

}  // namespace mproc
