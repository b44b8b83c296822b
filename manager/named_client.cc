// A client built from other sources than the manager's server (another executable, another
// build id): it reaches objects registered by name in the server, and nothing else. Used by
// manager_test: named_client UNIX_SOCKET_PATH HEX_AUTHKEY.
#include <cstdio>
#include <string>

#include "absl/strings/escaping.h"
#include "manager/manager.h"
#include "spawn/process.h"

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  if (argc != 3) return 2;
  auto m = mproc::Manager::Connect(mproc::Address::Unix(argv[1]), absl::HexStringToBytes(argv[2]));
  if (!m.ok()) {
    std::fprintf(stderr, "connect: %s\n", m.status().ToString().c_str());
    return 3;
  }
  auto tally = (*m)->Create("Tally", int64_t{100});
  if (!tally.ok()) {
    std::fprintf(stderr, "create: %s\n", tally.status().ToString().c_str());
    return 4;
  }
  auto n = tally->Call<int64_t>("add", int64_t{23});
  auto note = tally->Call<std::string>("note", std::string("from another binary"));
  auto missing = (*m)->Create("NoSuchType");
  if (!n.ok() || !note.ok()) return 5;
  std::printf("%lld %s %s\n", static_cast<long long>(*n), note->c_str(),
              missing.ok() ? "found?" : std::string(absl::StatusCodeToString(missing.status().code())).c_str());
  return 0;
}
