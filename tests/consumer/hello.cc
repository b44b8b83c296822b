// A consumer's binary: uses mproc's base/ targets through @mproc.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "base/deadline.h"
#include "base/features.h"
#include "base/syscall.h"

int main() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return 1;
  const std::string msg = "hello from a consumer of @mproc";
  if (mproc::WriteFull(fds[1], msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) return 1;
  char buf[64] = {};
  absl::Status s = mproc::ReadExact(fds[0], buf, msg.size(),
                                    mproc::Deadline::After(absl::Seconds(5)), "read(pipe)");
  if (!s.ok()) return 1;
  std::printf("%s\nclone3 available: %s\n", buf,
              mproc::HasFeature(mproc::Feature::kClone3) ? "yes" : "no");
  return std::string(buf) == msg ? 0 : 1;
}
