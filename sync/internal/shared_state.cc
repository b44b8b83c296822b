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

}  // namespace mproc::sync_internal
