// The MPI executor's rows: measured by mpi/bench/mpi_rows.cc (mproc's MpiExecutor, and a raw
// MPI ping-pong of the same bytes) and bench/peers/mpi4py_futures.py (mpi4py.futures'
// MPIPoolExecutor), each under `mpirun -n 3` (bench/report/mpi_peer.cc): one client rank and
// two worker ranks. Declared here so the report prints every one, as skipped with the reason
// where Open MPI or mpi4py is missing.

#include "bench/report/report.h"
#include "bench/report/report_internal.h"

namespace mproc::bench {

MPROC_REPORT_ROWS(MpiExecutorRows) {
  using report_internal::AddExternalRow;
  AddExternalRow("kernel.mpi.pingpong", Section::kKernel,
                 "MPI_Send/MPI_Recv round trip, ranks 0 and 1, a Submit's bytes each way");
  AddExternalRow("mpi4py.futures.submit", Section::kPeer,
                 "mpi4py MPIPoolExecutor submit().result(), 2 worker ranks");
  AddExternalRow("mpi4py.futures.map_chunk1", Section::kPeer,
                 "mpi4py MPIPoolExecutor map x*x, chunksize 1; per item")
      .per_item = true;
  AddExternalRow("mpi4py.futures.map_chunk100", Section::kPeer,
                 "mpi4py MPIPoolExecutor map x*x, chunksize 100; per item")
      .per_item = true;
  RowSpec& submit = AddExternalRow("mproc.mpi.submit", Section::kMproc,
                                   "MpiExecutor Submit().Result(), 2 worker ranks");
  submit.baselines = {"mpi4py.futures.submit", "kernel.mpi.pingpong"};
  RowSpec& map1 = AddExternalRow("mproc.mpi.map_chunk1", Section::kMproc,
                                 "MpiExecutor Map x*x, chunksize 1; per item");
  map1.baselines = {"mpi4py.futures.map_chunk1"};
  map1.per_item = true;
  RowSpec& map100 = AddExternalRow("mproc.mpi.map_chunk100", Section::kMproc,
                                   "MpiExecutor Map x*x over 10^5 ints, chunksize 100; per item");
  map100.baselines = {"mpi4py.futures.map_chunk100"};
  map100.per_item = true;
}

}  // namespace mproc::bench
