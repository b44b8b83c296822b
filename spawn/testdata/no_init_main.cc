// A program that forgets mproc::Init (for spawn/process_test's ForgottenInit tests). Each run
// of main() appends a line to $MPROC_TEST_COUNT_FILE. The parent starts one child (spawn, or
// with argument "forkserver", through a fork server); that process reruns main(), where
// Start() must refuse (exit 3) instead of starting another.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "spawn/process.h"

namespace {
void Noop() {}
}  // namespace

int main(int argc, char** argv) {
  const bool forkserver = argc > 1 && std::strcmp(argv[1], "forkserver") == 0;
  if (const char* path = std::getenv("MPROC_TEST_COUNT_FILE")) {
    if (std::FILE* f = std::fopen(path, "a")) {
      std::fprintf(f, "main\n");
      std::fclose(f);
    }
  }
  mproc::Process p(Noop);
  p.SetStartMethod(forkserver ? mproc::StartMethod::kForkServer : mproc::StartMethod::kSpawn);
  absl::Status s = p.Start();
  if (!s.ok()) {
    std::fprintf(stderr, "Start failed: %s\n", s.ToString().c_str());
    return 3;
  }
  if (!p.Join(absl::Seconds(60)).ok()) return 4;
  return p.exitcode() == 3 ? 0 : 1;
}
