#include "base/socket_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/process_id.h"
#include "base/status.h"

namespace mproc {

std::string SocketDirBase() {
  const char* t = std::getenv("TMPDIR");
  std::string base = t != nullptr && t[0] == '/' ? t : "/tmp";
  // "/mproc-forkserver-4194304-XXXXXX/socket" is 39 bytes; sun_path holds 107 and a NUL.
  if (base.size() > 60) base = "/tmp";
  return base;
}

absl::StatusOr<std::string> MakeSocketDir(std::string_view kind) {
  std::string tmpl = absl::StrCat(SocketDirBase(), "/mproc-", std::string(kind), "-",
                                  CurrentPid(), "-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoToStatus(errno, absl::StrCat("mkdtemp(", tmpl, ")"));
  }
  return tmpl;
}

std::optional<SocketDirName> ParseSocketDirName(std::string_view name) {
  if (size_t slash = name.rfind('/'); slash != std::string_view::npos) name = name.substr(slash + 1);
  constexpr std::string_view kPrefix = "mproc-";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  // <kind>-<pid>-<6 characters>
  size_t last = name.rfind('-');
  if (last == std::string_view::npos || name.size() - last - 1 != 6) return std::nullopt;
  size_t mid = name.rfind('-', last - 1);
  if (mid == std::string_view::npos || mid == 0) return std::nullopt;
  uint32_t pid = 0;
  if (!absl::SimpleAtoi(std::string(name.substr(mid + 1, last - mid - 1)), &pid) || pid == 0) {
    return std::nullopt;
  }
  return SocketDirName{std::string(name.substr(0, mid)), static_cast<pid_t>(pid)};
}

}  // namespace mproc
