// Seed 004, "Worker Pool with map".
#include <string>
#include <vector>

#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

std::string FetchUrl(std::string url) {
  // Simulate work
  return "fetched: " + url;
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::vector<std::string> urls = {"a.com", "b.com", "c.com", "d.com"};
  std::vector<std::string> results;
  {
    auto pool = mproc::Pool::Create({.processes = 4}).value();
    results = pool->Map(FetchUrl, urls).value();
  }
  for (const auto& r : results) py::Print(r);
}
