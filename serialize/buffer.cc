#include "serialize/buffer.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace mproc {

void EncodeBuffer::Grow(size_t need) {
  size_t cap = std::max<size_t>({size_ + need, capacity_ * 2, 64});
  std::unique_ptr<std::byte[]> next(new std::byte[cap]);  // 16-byte aligned
  if (size_) std::memcpy(next.get(), data_.get(), size_);
  data_ = std::move(next);
  capacity_ = cap;
}

bool DecodeReader::Fail(std::string_view what) {
  if (status_.ok()) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("serialize: ", AbslView(what), " at offset ", offset()));
  }
  return false;
}

bool DecodeReader::Truncated(size_t need) {
  if (!status_.ok()) return false;
  return Fail(absl::StrCat("truncated input: need ", need, " more bytes, ", remaining(),
                           " remain"));
}

bool DecodeReader::TakeFd(uint64_t index, UniqueFd* out) {
  if (!ok()) return false;
  if (index >= fds_.size()) {
    return Fail(absl::StrCat("fd index ", index, " but the frame carried ", fds_.size(), " fds"));
  }
  if (!fds_[index].ok()) return Fail(absl::StrCat("fd index ", index, " used twice"));
  *out = std::move(fds_[index]);
  return true;
}

bool DecodeReader::TakeSharedFd(uint64_t index, UniqueFd* out) {
  if (!ok()) return false;
  const UniqueFd* original = nullptr;
  for (const auto& [i, fd] : shared_) {
    if (i == index) original = &fd;
  }
  if (original == nullptr) {
    UniqueFd fd;
    if (!TakeFd(index, &fd)) return false;
    shared_.emplace_back(index, std::move(fd));
    original = &shared_.back().second;
  }
  UniqueFd dup(::fcntl(original->get(), F_DUPFD_CLOEXEC, 0));
  if (!dup.ok()) return Fail(absl::StrCat("dup of shared fd index ", index, ": ", ErrnoName(errno)));
  *out = std::move(dup);
  return true;
}

size_t DecodeReader::unclaimed_fds() const {
  size_t n = 0;
  for (const auto& fd : fds_) n += fd.ok() ? 1 : 0;
  return n;
}

}  // namespace mproc
