// base/code_ref.h — naming a function so that another process running the same binaries can
// find it: (loaded object, offset), where the object is named by its GNU build id.
//
// A spawn or fork-server child is a fresh image of the same executable (and the same shared
// libraries), loaded at different addresses (ASLR). A code address is therefore sent as the
// build id of the object that contains it plus the offset from that object's load base, and
// resolved in the receiver against its own loaded objects. An object without a build id is
// named by its path (the main executable by /proc/self/exe's target).
//
//   MPROC_ASSIGN_OR_RETURN(CodeRef ref, CodeRefFor(reinterpret_cast<const void*>(&Work)));
//   ... send ref ...
//   MPROC_ASSIGN_OR_RETURN(const void* fn, ResolveCodeRef(ref));   // &Work in this process
//
// Resolution only yields addresses inside an executable segment of an object loaded here, so
// bytes from a peer cannot name arbitrary memory; still, calling a received function runs the
// peer's choice of code — accept code references only from trusted channels (a spawn
// bootstrap socket, an authenticated fork server).
//
// Thread-safety: both functions are thread-safe (dl_iterate_phdr takes the loader's lock).
#ifndef MPROC_BASE_CODE_REF_H_
#define MPROC_BASE_CODE_REF_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace mproc {

struct CodeRef {
  std::string object;   // "build-id:<hex>" or "path:<absolute path>"
  uint64_t offset = 0;  // from the object's load base
};

// NOT_FOUND when `addr` is not inside an executable segment of a loaded object.
[[nodiscard]] absl::StatusOr<CodeRef> CodeRefFor(const void* addr);

// NOT_FOUND when no loaded object matches, or the offset is not inside one of its executable
// segments.
[[nodiscard]] absl::StatusOr<const void*> ResolveCodeRef(const CodeRef& ref);

// The name of this process's main executable as a CodeRef names objects ("build-id:<hex>",
// else "path:<absolute path>"): two processes with the same name run the same program, so
// code references pass between them. Thread-safe.
[[nodiscard]] std::string MainObjectId();

}  // namespace mproc

#endif  // MPROC_BASE_CODE_REF_H_
