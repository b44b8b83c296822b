// shm/shared_memory.h — named shared memory with CPython's API, reclaimed when abandoned.
//
//   // Process A                                   // Process B (any process of the same user)
//   MPROC_ASSIGN_OR_RETURN(SharedMemory shm,       MPROC_ASSIGN_OR_RETURN(SharedMemory shm,
//       SharedMemory::Create(1 << 20, "frames"));      SharedMemory::Attach("frames"));
//   std::memcpy(shm.data(), src, n);               Use(shm.bytes());
//   ...                                            shm.Close();
//   shm.Unlink();  // remove the name
//
// Semantics are CPython's multiprocessing.shared_memory.SharedMemory, in C++ casing:
//   * Create(size, name): size 0 is INVALID_ARGUMENT; an existing name is ALREADY_EXISTS; an
//     empty name picks a fresh random one (`mproc_` + 16 hex digits) and retries collisions.
//     A leading '/' is accepted and dropped, as CPython does; '/' elsewhere, NUL, "." and ".."
//     are INVALID_ARGUMENT.
//   * Attach(name): a missing name is NOT_FOUND; the size is the segment's, not the caller's.
//   * Close() drops this process's view (mapping and descriptor) and leaves the name;
//     Unlink() removes the name (attached views stay valid; the memory goes with the last one);
//     a second Unlink() is NOT_FOUND.
//
// Choice of mechanism. A memfd's name is only a label — no process can open a memfd by name —
// so named segments are files in a tmpfs directory (default /dev/shm, or $MPROC_SHM_DIR, or
// SharedMemoryOptions::dir), called `mproc.<name>` so that mproc only ever touches its own
// files (CPython can attach one as SharedMemory("mproc.<name>")). Instead of CPython's
// resource-tracker process, liveness is kept by the kernel with open-file-description locks
// (F_OFD_SETLK), which vanish when the last descriptor of their holder closes — including
// when the holder is SIGKILLed:
//   * every open view holds a read lock on byte 0 of the file ("attached");
//   * the creating process also holds byte 1 ("creator alive") from Create() until it calls
//     Unlink() or exits — through a duplicate of its view's descriptor that it keeps after
//     Close() (so the creator counts as attached until then, too).
// A segment is an orphan when both bytes can be write-locked: its creator died (or exited)
// without unlinking and nobody has it attached. Orphans are reclaimed (unlinked) by the last
// view to Close(), by Create() (its first in a directory, then at most one sweep per second
// per directory), and by ReclaimOrphans(). So, unlike CPython's tracker (CONTRACT §3.8):
//   * a segment whose creator died without unlinking is reclaimed, with no helper process and
//     no "leaked shared_memory" warning; and
//   * a segment still attached anywhere is never unlinked behind its users' backs — the
//     creator's exit does not pull the name out from under a process that is using it.
// Creation is atomic: the file is built unnamed (O_TMPFILE), sized, locked, and only then
// linked under its name, so an attacher never sees a half-made segment.
//
// Memory exhaustion: as with anonymous segments, tmpfs allocates on first touch; the default
// (Reserve::kLazy) is CPython's behaviour, and Reserve::kEager fallocates at Create so a full
// tmpfs is RESOURCE_EXHAUSTED there instead of a SIGBUS later.
//
// Passing a SharedMemory to another process (Codec<SharedMemory>, e.g. as a Process argument)
// sends its descriptor, so the receiver's view works even if the name was unlinked meanwhile
// (CPython's pickling re-attaches by name and fails then); the received view counts as
// attached for the reclaim rules above.
//
// Fork children: a view copied by fork() is inert — its destructor unmaps and closes the
// child's copies but never reclaims or unlinks (an inherited descriptor shares the parent's
// lock, so the child cannot tell the parent's use from its own). Explicit Unlink() works.
//
// Known limits: unlike a memfd, a named tmpfs file cannot be sealed, so a process of the same
// user that truncates it can SIGBUS the readers (as with CPython's). The creator keeps one
// descriptor per segment it created and has not unlinked; if another process unlinks the
// name, the creator releases that descriptor (and with it the memory) at a later Create, once
// its registry has doubled in size — unlink in the creator to free memory promptly.
//
// Thread-safety: a SharedMemory is a value; a const one may be read from many threads.

#ifndef MPROC_SHM_SHARED_MEMORY_H_
#define MPROC_SHM_SHARED_MEMORY_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "shm/segment.h"

namespace mproc {

struct SharedMemoryOptions {
  // Directory holding the segments; empty means $MPROC_SHM_DIR, else /dev/shm.
  std::string dir;
  // kEager reserves every page at Create (RESOURCE_EXHAUSTED when tmpfs is full).
  Segment::Reserve reserve = Segment::Reserve::kLazy;
};

// One named segment as any process of its user sees it (tools/mproc lists them).
struct SharedMemoryInfo {
  std::string name;  // as given to Create (the file is "mproc.<name>")
  std::string path;
  uint64_t size = 0;
  bool attached = false;       // a view is open somewhere (the creator's counts until it unlinks)
  bool creator_alive = false;  // the creator has neither exited nor unlinked it
  // What Close/Create/ReclaimOrphans would reclaim.
  bool orphan() const { return !attached && !creator_alive; }
};

class SharedMemory {
 public:
  // SharedMemory::Create(size, name, options)
  //
  // A new zero-filled segment of `size` bytes named `name` (empty: a random name), attached
  // and mapped, its creator lock held by this process (see above). May first sweep orphans
  // from the directory (at most once a second per directory). Never waits for other
  // processes. Errors: INVALID_ARGUMENT (size 0; a name that is "/" alone, over 200 bytes,
  // "." or "..", or holds '/' or NUL), ALREADY_EXISTS (the name is taken), RESOURCE_EXHAUSTED
  // (Reserve::kEager and tmpfs is full; out of descriptors or memory); other failed calls by
  // errno (base/status.h), e.g. NOT_FOUND when the directory does not exist. Thread-safe.
  [[nodiscard]] static absl::StatusOr<SharedMemory> Create(size_t size, std::string_view name = "",
                                             const SharedMemoryOptions& options = {});
  // SharedMemory::Attach(name, options)
  //
  // Opens and maps the existing segment `name`, whole. Blocks only while a reclaimer in some
  // process holds the segment's lock (a few system calls). Errors: INVALID_ARGUMENT (a bad
  // name, as Create), NOT_FOUND (no such segment, or it was reclaimed while attaching),
  // FAILED_PRECONDITION (the file is not a regular file of nonzero size); other failed calls
  // by errno (PERMISSION_DENIED, RESOURCE_EXHAUSTED for descriptors or address space).
  // Thread-safe.
  [[nodiscard]] static absl::StatusOr<SharedMemory> Attach(std::string_view name,
                                             const SharedMemoryOptions& options = {});
  // SharedMemory::Unlink(name, options)
  //
  // Removes `name` without attaching (whatever segment has that name now); views stay valid.
  // If this process created that segment, its creator lock goes too. Never blocks. Errors:
  // INVALID_ARGUMENT (a bad name, as Create), NOT_FOUND (it does not exist); other failed
  // unlinks by errno (e.g. PERMISSION_DENIED). Thread-safe.
  static absl::Status Unlink(std::string_view name, const SharedMemoryOptions& options);
  // SharedMemory::ReclaimOrphans(options)
  //
  // Unlinks every orphaned mproc segment in the directory; returns how many. Never blocks
  // (it tries each segment's locks without waiting). Errors: stat's errno when the directory
  // cannot be looked at (NOT_FOUND when it does not exist); an unreadable directory counts 0.
  // Thread-safe and process-safe.
  [[nodiscard]] static absl::StatusOr<int> ReclaimOrphans(const SharedMemoryOptions& options = {});
  // SharedMemory::List(options)
  //
  // Every named segment in the directory, by name, with its state read from its lock bytes
  // (without taking them: listing changes nothing). A file that vanishes meanwhile is left out.
  // Never blocks. Errors: opendir's errno (NOT_FOUND, PERMISSION_DENIED). Thread-safe.
  [[nodiscard]] static absl::StatusOr<std::vector<SharedMemoryInfo>> List(const SharedMemoryOptions& options = {});
  // The directory in use for `options`.
  static std::string Directory(const SharedMemoryOptions& options = {});

  SharedMemory() = default;
  // A copy is a handle to the same view (same mapping, same descriptor), as Lock and Value
  // copies are: it passes to a Process or a Pool initializer as they do. Close() drops one
  // handle; the view (mapping and descriptor) goes with the last.
  SharedMemory(const SharedMemory& o) = default;
  SharedMemory& operator=(const SharedMemory& o);
  SharedMemory(SharedMemory&& o) noexcept;
  SharedMemory& operator=(SharedMemory&& o) noexcept;
  // Close().
  ~SharedMemory();

  // The name without "mproc." (kept after Close); the view's size, address and bytes (0,
  // null, empty once closed); closed() for an empty or closed handle.
  const std::string& name() const { return name_; }
  size_t size() const { return view_ ? view_->mapping.size() : 0; }
  void* data() const { return view_ ? view_->mapping.data() : nullptr; }
  std::span<std::byte> bytes() const { return view_ ? view_->mapping.bytes() : std::span<std::byte>(); }
  bool closed() const { return view_ == nullptr; }

  // SharedMemory::Close()
  //
  // Drops this handle. Idempotent, as CPython's close(). When it was the last handle of the
  // view and the view was the last of a segment whose creator is gone without unlinking, the
  // segment is reclaimed. (Two copies closed at the same moment on two threads may both leave
  // that to the next sweep.) A fork child's copy never reclaims. No error; never waits for
  // other processes (their locks are tried, not waited for). Must not race other calls on
  // this same object; copies may be closed on any threads.
  void Close();
  // SharedMemory::Unlink()
  //
  // Removes the name (this view stays usable), as Unlink(name(), its directory): whatever
  // segment has that name now. Works after Close(). Never blocks. Errors: FAILED_PRECONDITION
  // for an empty handle, NOT_FOUND if the name was already removed; others as the static
  // Unlink. Thread-safe as the static Unlink.
  absl::Status Unlink();

 private:
  friend struct Codec<SharedMemory>;
  SharedMemory(std::string name, std::string path, UniqueFd fd, Mapping mapping);
  // A view of a segment whose descriptor arrived from another process.
  [[nodiscard]]
  static absl::StatusOr<SharedMemory> Adopt(std::string name, std::string path, UniqueFd fd);

  struct View {
    UniqueFd fd;
    Mapping mapping;
  };
  std::string name_;
  std::string path_;
  std::shared_ptr<View> view_;  // null once closed
  pid_t owner_pid_ = 0;
};

template <>
struct Codec<SharedMemory> {
  static constexpr bool kCarriesFds = true;
  static constexpr size_t kMinSize = 3;
  static void Encode(EncodeBuffer& b, const SharedMemory& m) {
    Codec<std::string>::Encode(b, m.name_);
    Codec<std::string>::Encode(b, m.path_);
    uint8_t tag = m.view_ ? 1 : 0;
    b.Append(&tag, 1);
    if (m.view_) b.PutVarint(b.AttachFd(m.view_->fd.get()));
  }
  static bool Decode(DecodeReader& r, SharedMemory& out) {
    std::string name;
    std::string path;
    uint8_t tag;
    if (!Codec<std::string>::Decode(r, name) || !Codec<std::string>::Decode(r, path) ||
        !r.Read(&tag, 1)) {
      return false;
    }
    if (tag == 0) {
      out = SharedMemory();
      return true;
    }
    uint64_t index;
    UniqueFd fd;
    if (tag != 1 || !r.ReadVarint(&index) || !r.TakeFd(index, &fd)) {
      return r.ok() ? r.Fail("bad SharedMemory tag") : false;
    }
    absl::StatusOr<SharedMemory> m = SharedMemory::Adopt(std::move(name), std::move(path), std::move(fd));
    if (!m.ok()) return r.Fail(std::string(m.status().message()));
    out = *std::move(m);
    return true;
  }
};

}  // namespace mproc

#endif  // MPROC_SHM_SHARED_MEMORY_H_
