// Seed 000 §59.17: a named shared memory block, written and read back, closed and unlinked.
#include <cstring>
#include <string>

#include "examples/py.h"
#include "shm/shared_memory.h"
#include "spawn/process.h"

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto shm = mproc::SharedMemory::Create(10).value();
  std::memcpy(shm.data(), "hello", 5);  // shm.buf[:5] = b"hello"
  py::Print(py::Bytes{std::string(static_cast<const char*>(shm.data()), 5)});
  shm.Close();
  return shm.Unlink().ok() ? 0 : 1;
}
