// Seed 000 §59.24: an initializer runs once in each worker and sets that worker's state.
#include "examples/py.h"
#include "pool/pool.h"
#include "spawn/process.h"

int state = 0;  // each worker has its own

void InitWorker(int value) { state = value; }
int Work(int x) { return state + x; }

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto pool = mproc::Pool::Create({}, InitWorker, 10).value();
  py::Print(pool->Map(Work, {1, 2, 3}).value());
}
