// Seed 000 §59.4: the start methods this platform offers, the default first, and the default.
#include <string>
#include <vector>

#include "examples/py.h"
#include "spawn/process.h"

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<std::string> names;
  for (mproc::StartMethod m : mproc::GetAllStartMethods()) {
    names.emplace_back(mproc::StartMethodName(m));
  }
  py::Print(names);
  py::Print(mproc::StartMethodName(mproc::GetStartMethod()));
}
