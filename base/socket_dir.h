// base/socket_dir.h — where mproc's fork servers and managers put their Unix sockets.
//
// Each server gets a private directory, "<base>/mproc-<kind>-<owner pid>-XXXXXX", holding its
// socket: the name says what it is and which process started it, so `tools/mproc` can list
// them (and reclaim those left behind by a SIGKILLed owner) the way ipcs lists System V IPC.
// <base> is $TMPDIR when it is short enough for a Unix socket path (108 bytes with the rest),
// else /tmp.
#ifndef MPROC_BASE_SOCKET_DIR_H_
#define MPROC_BASE_SOCKET_DIR_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mproc {

// The directory the socket directories are made in.
std::string SocketDirBase();

// Makes "<SocketDirBase()>/mproc-<kind>-<this pid>-XXXXXX" (mode 0700) and returns its path.
[[nodiscard]] absl::StatusOr<std::string> MakeSocketDir(std::string_view kind);

// What a socket directory's name says: its kind and its owner's pid; nullopt for a name that
// is not one (only the last path component is looked at).
struct SocketDirName {
  std::string kind;
  pid_t owner = 0;
};
std::optional<SocketDirName> ParseSocketDirName(std::string_view name);

}  // namespace mproc

#endif  // MPROC_BASE_SOCKET_DIR_H_
