// base/unique_fd.h — owning and borrowed file descriptors.
//
// UniqueFd owns one descriptor and closes it exactly once; BorrowedFd names a descriptor
// someone else owns, for parameters. The shape follows AOSP's android-base/unique_fd.h:
// move-only, [[nodiscard]] Release(), Reset() preserves errno, no implicit int conversion.
//
//   UniqueFd fd(::memfd_create("seg", MFD_CLOEXEC));
//   if (!fd.ok()) return ErrnoToStatus(errno, "memfd_create(seg)");
//   Use(fd.borrow());
//
// Thread-safety: a UniqueFd is a value; concurrent mutation of one object is a data race.
// Closing: close() is never retried (the descriptor is gone even on EINTR).

#ifndef MPROC_BASE_UNIQUE_FD_H_
#define MPROC_BASE_UNIQUE_FD_H_

#include <cerrno>
#include <utility>

namespace mproc {

// Closes fd without retrying on EINTR and preserves errno. Negative fds are ignored.
void CloseNoInt(int fd) noexcept;

// A descriptor owned by someone else. Cheap to copy; never closes.
class BorrowedFd {
 public:
  constexpr BorrowedFd() = default;
  constexpr explicit BorrowedFd(int fd) : fd_(fd) {}

  constexpr int get() const { return fd_; }
  constexpr bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Owns one file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  ~UniqueFd() { Reset(); }

  // The descriptor, or -1.
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  BorrowedFd borrow() const { return BorrowedFd(fd_); }

  // Gives up ownership without closing; returns the descriptor.
  [[nodiscard]] int Release() { return std::exchange(fd_, -1); }

  // Closes the current descriptor (if any; errno preserved) and takes `fd`.
  void Reset(int fd = -1) {
    if (fd_ >= 0 && fd_ != fd) CloseNoInt(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace mproc

#endif  // MPROC_BASE_UNIQUE_FD_H_
