// Seed 000 §59.9: the dict is encoded in the parent (its codec, mproc's pickle) and rebuilt
// in the child. A target must be a free function (or captureless lambda) and its arguments
// must have codecs: both are checked when the program compiles, not when it runs.
#include <map>
#include <string>

#include "examples/py.h"
#include "spawn/process.h"

void Worker(std::map<std::string, int> data) { py::Print(data); }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  mproc::Process p(Worker, std::map<std::string, int>{{"x", 1}});
  if (!p.Start().ok() || !p.Join().ok()) return 1;
}
