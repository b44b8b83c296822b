#include "context/context.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace mproc {

Context GetContext(StartMethod method) { return Context(method); }

Context GetContext() { return Context(GetStartMethod()); }

absl::StatusOr<Context> GetContext(std::string_view method) {
  for (StartMethod m : {StartMethod::kFork, StartMethod::kSpawn, StartMethod::kForkServer}) {
    if (method == StartMethodName(m)) return Context(m);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "cannot find context for '", std::string(method), "': the start methods are fork, spawn and forkserver"));
}

}  // namespace mproc
