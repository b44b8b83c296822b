// Boost.Interprocess, a widely used C++ peer: its process-shared mutex and its message queue.

#include <fcntl.h>
#include <unistd.h>

#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <cstring>
#include <string>

#include "bench/report/report.h"
#include "bench/rows/two_process.h"

namespace mproc::bench {
namespace {

namespace bip = boost::interprocess;

void BoostMutex(benchmark::State& state) {
  SharedObject<bip::interprocess_mutex> m;
  for (auto _ : state) {
    m->lock();
    m->unlock();
  }
}

constexpr int kMsgs = 1024;  // per iteration

// A child sends kMsgs 64-byte messages per request through a named message_queue; the parent
// receives them. ns per message.
void BoostMessageQueue(benchmark::State& state) {
  const std::string name = "mproc_bench_mq_" + std::to_string(::getpid());
  bip::message_queue::remove(name.c_str());
  try {
    bip::message_queue mq(bip::create_only, name.c_str(), 256, 64);
    int ctl[2];
    if (::pipe2(ctl, O_CLOEXEC) != 0) {
      state.SkipWithError("pipe2 failed");
      return;
    }
    pid_t pid = ForkPinnedChild(-1, [&] {
      ::close(ctl[1]);
      try {
        bip::message_queue child_mq(bip::open_only, name.c_str());
        char msg[64];
        std::memset(msg, 'b', sizeof(msg));
        char go;
        while (::read(ctl[0], &go, 1) == 1) {
          for (int i = 0; i < kMsgs; ++i) child_mq.send(msg, sizeof(msg), 0);
        }
      } catch (...) {
        return 1;
      }
      return 0;
    });
    ::close(ctl[0]);
    char buf[64];
    bip::message_queue::size_type got;
    unsigned prio;
    CpuMeter cpu({pid});
    for (auto _ : state) {
      char go = 1;
      ::write(ctl[1], &go, 1);
      for (int i = 0; i < kMsgs; ++i) mq.receive(buf, sizeof(buf), got, prio);
    }
    cpu.Stop(state);
    ::close(ctl[1]);
    ReapChild(pid);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  bip::message_queue::remove(name.c_str());
  SetOpsPerIteration(state, kMsgs);
}

}  // namespace

MPROC_REPORT_ROWS(BoostRows) {
  AddRow("boost.interprocess_mutex", Section::kPeer, BoostMutex)
      .Title("Boost.Interprocess interprocess_mutex lock+unlock");
  AddRow("boost.message_queue_64B", Section::kPeer, BoostMessageQueue)
      .Title("Boost.Interprocess message_queue, 64 B, 1 producer -> 1 consumer process")
      .PerItem();
}

}  // namespace mproc::bench
