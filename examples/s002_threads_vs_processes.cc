// Seed 002, "Processes vs Threads": threads of one process share a counter; processes each
// count in their own copy, and the parent's stays 0. (A C++ counter shared by threads must be
// atomic: a plain int would be a data race.)
#include <atomic>
#include <string>
#include <thread>

#include "examples/py.h"
#include "spawn/process.h"

std::atomic<int> counter_thread{0};
int counter_process = 0;

void BumpThread(int n) {
  int now = 0;
  for (int i = 0; i < n; ++i) now = counter_thread.fetch_add(1) + 1;
  py::Print("Thread's counter value:", now);
}

void BumpProcess(int n) {
  for (int i = 0; i < n; ++i) counter_process += 1;
  py::Print("Process's counter value:", counter_process);
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  std::thread t1(BumpThread, 100'000), t2(BumpThread, 100'000);
  t1.join();
  t2.join();

  mproc::Process p1(BumpProcess, 100'000), p2(BumpProcess, 100'000);
  (void)p1.Start();
  (void)p2.Start();
  (void)p1.Join();
  (void)p2.Join();

  py::Print("Process does not see counter in same memory:", counter_process);
  py::Print("Threads see counter in same memory:", counter_thread.load());
}
