#include "sync/internal/shared_state.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <utility>

#include "base/mutex.h"
#include "base/process_id.h"

namespace mproc::sync_internal {
namespace {

constexpr size_t kChunkBytes = 256 << 10;
constexpr size_t kSlotAlign = 64;  // a cache line: objects of a chunk share none

// Every region this process maps, by file identity, so that handles arriving into an already
// mapped chunk reuse its mapping (and its one descriptor). Expired entries are pruned as the
// table grows.
struct Registry {
  Mutex mu;
  std::map<std::pair<dev_t, ino_t>, std::weak_ptr<Region>> regions ABSL_GUARDED_BY(mu);
  size_t prune_at ABSL_GUARDED_BY(mu) = 64;

  // This process's current chunk for new objects, and how much of it is used. Held weakly:
  // a chunk whose objects are all gone is freed (with its descriptor) even while current.
  std::weak_ptr<Region> current ABSL_GUARDED_BY(mu);
  size_t used ABSL_GUARDED_BY(mu) = 0;
  pid_t owner ABSL_GUARDED_BY(mu) = 0;  // a fork child starts a chunk of its own

  void AddLocked(const std::shared_ptr<Region>& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    struct stat st;
    if (::fstat(r->segment.fd(), &st) != 0) return;
    if (regions.size() >= prune_at) {
      std::erase_if(regions, [](const auto& e) { return e.second.expired(); });
      prune_at = std::max<size_t>(64, 2 * regions.size());
    }
    regions[{st.st_dev, st.st_ino}] = r;
  }
};

Registry& Reg() {
  static auto* r = new Registry;  // never destroyed: handles may outlive static destruction
  return *r;
}

}  // namespace

absl::StatusOr<std::shared_ptr<Region>> CreateRegion(size_t size, std::string_view name) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size = (size + page - 1) / page * page;
  absl::StatusOr<Segment> seg = Segment::Create(size, name);
  if (!seg.ok()) return seg.status();
  absl::StatusOr<Mapping> map = seg->Map();
  if (!map.ok()) return map.status();
  auto region = std::make_shared<Region>();
  region->segment = *std::move(seg);
  region->mapping = *std::move(map);
  return region;
}

absl::StatusOr<std::pair<std::shared_ptr<Region>, char*>> AllocateShared(size_t size,
                                                                         std::string_view name) {
  if (size > kChunkBytes / 4) {
    absl::StatusOr<std::shared_ptr<Region>> own = CreateRegion(size, name);
    if (!own.ok()) return own.status();
    char* at = static_cast<char*>((*own)->mapping.data());
    return std::make_pair(*std::move(own), at);
  }
  Registry& reg = Reg();
  MutexLock lock(&reg.mu);
  if (reg.owner != CurrentPid()) {  // a fork child: its parent's chunk is its parent's to fill
    reg.current.reset();
    reg.used = 0;
    reg.owner = CurrentPid();
  }
  const size_t need = (size + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
  std::shared_ptr<Region> chunk = reg.current.lock();
  if (chunk == nullptr || reg.used + need > chunk->mapping.size()) {
    absl::StatusOr<std::shared_ptr<Region>> fresh = CreateRegion(kChunkBytes, "mproc-sync");
    if (!fresh.ok()) return fresh.status();
    chunk = *std::move(fresh);
    reg.current = chunk;
    reg.used = 0;
    reg.AddLocked(chunk);
  }
  char* at = static_cast<char*>(chunk->mapping.data()) + reg.used;
  reg.used += need;
  return std::make_pair(std::move(chunk), at);
}

size_t MappedChunksForTesting() {
  Registry& reg = Reg();
  MutexLock lock(&reg.mu);
  size_t n = 0;
  for (const auto& [key, weak] : reg.regions) n += weak.expired() ? 0 : 1;
  return n;
}

void EncodeRegionRef(EncodeBuffer& b, const std::shared_ptr<Region>& region, const void* state) {
  uint8_t tag = region != nullptr ? 1 : 0;
  b.Append(&tag, 1);
  if (region == nullptr) return;
  b.PutVarint(b.AttachSharedFd(region->segment.fd()));
  b.PutVarint(static_cast<uint64_t>(static_cast<const char*>(state) -
                                    static_cast<const char*>(region->mapping.data())));
}

bool DecodeRegionRef(DecodeReader& r, size_t need, size_t align, std::shared_ptr<Region>* region,
                     char** state) {
  uint8_t tag;
  if (!r.Read(&tag, 1)) return false;
  if (tag == 0) {
    region->reset();
    *state = nullptr;
    return true;
  }
  if (tag != 1) return r.Fail("bad shared-object handle tag");
  uint64_t index;
  uint64_t offset;
  UniqueFd fd;
  if (!r.ReadVarint(&index) || !r.TakeSharedFd(index, &fd) || !r.ReadVarint(&offset)) return false;
  absl::StatusOr<Segment> seg = Segment::FromFd(std::move(fd));
  if (!seg.ok()) return r.Fail(std::string(seg.status().message()));
  if (offset > seg->size() || seg->size() - offset < need || offset % align != 0) {
    return r.Fail("shared-object handle points outside its segment");
  }
  struct stat st;
  if (::fstat(seg->fd(), &st) != 0) return r.Fail("fstat of a shared-object segment failed");
  Registry& reg = Reg();
  MutexLock lock(&reg.mu);
  auto known = reg.regions.find({st.st_dev, st.st_ino});
  std::shared_ptr<Region> out = known == reg.regions.end() ? nullptr : known->second.lock();
  if (out == nullptr || out->mapping.size() != seg->size()) {
    absl::StatusOr<Mapping> map = seg->Map();
    if (!map.ok()) return r.Fail(std::string(map.status().message()));
    out = std::make_shared<Region>();
    out->segment = *std::move(seg);
    out->mapping = *std::move(map);
    reg.AddLocked(out);
  }
  *state = static_cast<char*>(out->mapping.data()) + offset;
  *region = std::move(out);
  return true;
}

}  // namespace mproc::sync_internal
