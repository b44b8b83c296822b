// Seed 004, multiprocessing.Queue: a producer, a consumer and a sentinel (None: nullopt).
#include <optional>

#include "examples/py.h"
#include "ipc/queue.h"
#include "spawn/process.h"

using Item = std::optional<int>;

void Producer(mproc::Queue<Item> queue) {
  for (int i = 0; i < 5; ++i) (void)queue.Put(i);
  (void)queue.Put(std::nullopt);  // sentinel to signal completion
}

void Consumer(mproc::Queue<Item> queue) {
  while (true) {
    absl::StatusOr<Item> item = queue.Get();
    if (!item.ok() || !item->has_value()) break;
    py::Print("Received: " + std::to_string(**item));
  }
}

int main(int argc, char** argv) {
  mproc::Init(argc, argv);
  auto q = mproc::Queue<Item>::Create().value();
  mproc::Process p1(Producer, q);
  mproc::Process p2(Consumer, q);
  (void)p1.Start();
  (void)p2.Start();
  (void)p1.Join();
  (void)p2.Join();
}
