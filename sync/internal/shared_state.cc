#include "sync/internal/shared_state.h"

#include <unistd.h>

namespace mproc::sync_internal {

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

void EncodeRegionRef(EncodeBuffer& b, const std::shared_ptr<Region>& region, const void* state) {
  uint8_t tag = region != nullptr ? 1 : 0;
  b.Append(&tag, 1);
  if (region == nullptr) return;
  b.PutVarint(b.AttachFd(region->segment.fd()));
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
  if (!r.ReadVarint(&index) || !r.TakeFd(index, &fd) || !r.ReadVarint(&offset)) return false;
  absl::StatusOr<Segment> seg = Segment::FromFd(std::move(fd));
  if (!seg.ok()) return r.Fail(std::string(seg.status().message()));
  if (offset > seg->size() || seg->size() - offset < need || offset % align != 0) {
    return r.Fail("shared-object handle points outside its segment");
  }
  absl::StatusOr<Mapping> map = seg->Map();
  if (!map.ok()) return r.Fail(std::string(map.status().message()));
  auto out = std::make_shared<Region>();
  out->segment = *std::move(seg);
  out->mapping = *std::move(map);
  *state = static_cast<char*>(out->mapping.data()) + offset;
  *region = std::move(out);
  return true;
}

}  // namespace mproc::sync_internal
