// CPython's multiprocessing on this machine, measured by bench/peers/cpython_mp.py in the same
// report run. The rows are declared here so the report prints every one of them — as skipped
// with the reason when python3 is missing, never as a stored figure.

#include <string>

#include "bench/report/report.h"
#include "bench/report/report_internal.h"

namespace mproc::bench {

MPROC_REPORT_ROWS(CPythonRows) {
  using report_internal::AddExternalRow;
  const Section s = Section::kCPython;
  AddExternalRow("cpython.process.fork", s, "Process start+join, fork");
  AddExternalRow("cpython.process.spawn", s, "Process start+join, spawn");
  AddExternalRow("cpython.process.forkserver", s, "Process start+join, forkserver");
  AddExternalRow("cpython.lock", s, "mp.Lock acquire+release");
  AddExternalRow("cpython.lock_create", s, "mp.Lock() made, kept 1000 at a time");
  AddExternalRow("cpython.value_create", s, "mp.Value('i') made, kept 1000 at a time");
  AddExternalRow("cpython.hold_locks_values.1000", s,
                 "1000 mp.Lock and 1000 mp.Value held at once; per object")
      .per_item = true;
  AddExternalRow("cpython.hold_locks_values.10000", s,
                 "10000 mp.Lock and 10000 mp.Value held at once; per object")
      .per_item = true;
  AddExternalRow("cpython.queue.1p1c", s, "mp.Queue, 1 producer -> 1 consumer, small ints")
      .per_item = true;
  AddExternalRow("cpython.simplequeue.1p1c", s, "mp.SimpleQueue, 1 producer -> 1 consumer")
      .per_item = true;
  AddExternalRow("cpython.queue.1p1c.same_cpu", s,
                 "mp.Queue, 1 producer -> 1 consumer, small ints (both on one CPU)")
      .per_item = true;
  AddExternalRow("cpython.queue.1p1c.cross_cpu", s,
                 "mp.Queue, 1 producer -> 1 consumer, small ints (two CPUs)")
      .per_item = true;
  for (int n : {1, 16, 64}) {
    AddExternalRow("cpython.queue.producers." + std::to_string(n), s,
                   "mp.Queue, " + std::to_string(n) +
                       " producer processes -> 1 consumer, rounds shared evenly")
        .per_item = true;
  }
  AddExternalRow("cpython.pipe.roundtrip.same_cpu", s, "mp.Pipe round trip (same CPU)");
  AddExternalRow("cpython.pipe.roundtrip.cross_cpu", s, "mp.Pipe round trip (cross CPU)");
  AddExternalRow("cpython.pipe.roundtrip_4KiB.same_cpu", s, "mp.Pipe round trip, 4 KiB (same CPU)");
  AddExternalRow("cpython.pipe.roundtrip_4KiB.cross_cpu", s,
                 "mp.Pipe round trip, 4 KiB (cross CPU)");
  AddExternalRow("cpython.listener.connect_auth", s,
                 "Client() connect + mutual authkey handshake, Unix socket");
  AddExternalRow("cpython.pool.create", s, "Pool(2) create + close + join");
  AddExternalRow("cpython.pool.map_default", s, "Pool(2).map x*x over 10^6 ints, default chunksize")
      .per_item = true;
  AddExternalRow("cpython.pool.map_chunk1", s, "Pool(2).map x*x over 2*10^4 ints, chunksize=1")
      .per_item = true;
  AddExternalRow("cpython.pool.apply", s, "Pool.apply, one synchronous round trip");
  AddExternalRow("cpython.pool.apply_async", s, "Pool.apply_async, 2000 submitted then collected")
      .per_item = true;
  AddExternalRow("cpython.executor.submit", s, "ProcessPoolExecutor(2).submit().result()");
  AddExternalRow("cpython.manager.dict", s, "Manager().dict() set from a child");
  AddExternalRow("cpython.manager.dict_64_clients", s,
                 "Manager().dict() set from 64 child processes at once; time per op, all together")
      .per_item = true;
  AddExternalRow("cpython.value.incr", s, "Value('i') += 1 under get_lock()");
  AddExternalRow("cpython.shm.create", s, "SharedMemory 1 MiB create + close + unlink");
  AddExternalRow("cpython.queue.bytes_64MiB", s,
                 "mp.Queue(2) of 64 MiB bytes, producer child -> parent, per item")
      .per_item = true;
  AddExternalRow("cpython.shared_memory.handoff_64MiB", s,
                 "fresh 64 MiB SharedMemory per item, name via mp.Queue(2), attach+close+unlink")
      .per_item = true;
  AddExternalRow("cpython.pickle.int", s, "pickle dumps+loads, int");
  AddExternalRow("cpython.pickle.str64", s, "pickle dumps+loads, 64 B str");
  AddExternalRow("cpython.pickle.floats1k", s, "pickle dumps+loads, 1 KiB list of floats");
  AddExternalRow("cpython.pickle.bytes1m", s, "pickle dumps+loads, 1 MiB bytes").bytes_per_op =
      1 << 20;
  AddExternalRow("cpython.pickle.dict_of_lists", s, "pickle dumps+loads, dict of 16 lists of 16 ints");
}

}  // namespace mproc::bench
