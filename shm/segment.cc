#include "shm/segment.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/features.h"
#include "base/status.h"
#include "base/syscall.h"

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

namespace mproc {

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    Reset();
    addr_ = o.addr_;
    size_ = o.size_;
    o.addr_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void Mapping::Reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

absl::StatusOr<Segment> Segment::Create(size_t size, std::string_view name, Reserve reserve) {
  if (size == 0) return absl::InvalidArgumentError("shared memory size must be positive");
  std::string label(name.substr(0, 200));
  unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
  if (HasFeature(Feature::kMemfdNoexecSeal)) flags |= MFD_NOEXEC_SEAL;
  UniqueFd fd(::memfd_create(label.c_str(), flags));
  if (!fd.ok()) return ErrnoToStatus(errno, absl::StrCat("memfd_create(", label, ")"));
  if (RetryEintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("ftruncate(", label, ", ", size, ")"));
  }
  if (reserve == Reserve::kEager) {
    int r = RetryEintr([&] { return ::fallocate(fd.get(), 0, 0, static_cast<off_t>(size)); });
    if (r != 0) {
      int err = errno;
      if (err == ENOSPC || err == ENOMEM) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "shared memory: cannot reserve ", size, " bytes for ", label,
            " (tmpfs/memory exhausted: ", ErrnoName(err), ")"));
      }
      return ErrnoToStatus(err, absl::StrCat("fallocate(", label, ", ", size, ")"));
    }
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return ErrnoToStatus(errno, absl::StrCat("fcntl(F_ADD_SEALS, ", label, ")"));
  }
  return Segment(std::move(fd), size);
}

absl::StatusOr<Segment> Segment::FromFd(UniqueFd fd) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, "fstat(shared memory fd)");
  if (st.st_size <= 0) return absl::InvalidArgumentError("shared memory fd has size 0");
  int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
    return absl::InvalidArgumentError(
        "descriptor is not a sealed mproc segment (a peer could shrink it under us)");
  }
  return Segment(std::move(fd), static_cast<size_t>(st.st_size));
}

absl::StatusOr<Segment> Segment::Duplicate() const {
  UniqueFd dup(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!dup.ok()) return ErrnoToStatus(errno, "fcntl(F_DUPFD_CLOEXEC, segment)");
  return Segment(std::move(dup), size_);
}

absl::StatusOr<Mapping> Segment::Map() const {
  if (!fd_.ok()) return absl::FailedPreconditionError("segment is closed");
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) return ErrnoToStatus(errno, absl::StrCat("mmap(segment, ", size_, ")"));
  return Mapping(p, size_);
}

}  // namespace mproc
