// Seed 000 §59.23: an exception thrown in a worker comes back to the caller: Map returns
// ABORTED carrying the exception's type and message.
#include <stdexcept>
#include <string>

#include "examples/py.h"
#include "pool/pool.h"
#include "serialize/remote_error.h"
#include "spawn/process.h"

int Fail(int x) { throw std::invalid_argument(std::to_string(x)); }  // raise ValueError(x)

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto pool = mproc::Pool::Create({.processes = 2}).value();
  auto results = pool->Map(Fail, {1, 2, 3});
  if (!results.ok() && mproc::ExceptionType(results.status()) == "std::invalid_argument") {
    py::Print("caught:", mproc::ExceptionMessage(results.status()));
  }
}
