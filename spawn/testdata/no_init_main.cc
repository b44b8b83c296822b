// A program that forgets mproc::Init (for spawn/process_test's ForgottenInit test). Each run of
// main() appends a line to $MPROC_TEST_COUNT_FILE. The parent spawns one child; that child
// reruns main(), where Start() must refuse (exit 3) instead of spawning again.
#include <cstdio>
#include <cstdlib>

#include "spawn/process.h"

namespace {
void Noop() {}
}  // namespace

int main() {
  if (const char* path = std::getenv("MPROC_TEST_COUNT_FILE")) {
    if (std::FILE* f = std::fopen(path, "a")) {
      std::fprintf(f, "main\n");
      std::fclose(f);
    }
  }
  mproc::Process p(Noop);
  p.SetStartMethod(mproc::StartMethod::kSpawn);
  if (!p.Start().ok()) return 3;
  if (!p.Join(absl::Seconds(60)).ok()) return 4;
  return p.exitcode() == 3 ? 0 : 1;
}
