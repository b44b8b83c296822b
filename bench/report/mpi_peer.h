// bench/report/mpi_peer.h — the MPI rows: mproc's MpiExecutor and the raw MPI floor
// (mpi/bench/mpi_rows.cc), and mpi4py.futures (bench/peers/mpi4py_futures.py), each run under
// `mpirun --mca pml ob1 -n 3`.
#ifndef MPROC_BENCH_REPORT_MPI_PEER_H_
#define MPROC_BENCH_REPORT_MPI_PEER_H_

#include <string>

#include "bench/report/python_peer.h"

namespace mproc::bench {

// Runs mpi/mpi_rows (a runfile of the report where MPI was installed at build time). No
// mpirun, or no binary: a skipped run saying why.
PeerRun RunMpiExecutorRows(bool quick);

// Runs the mpi4py.futures peer with `python` (Debian's python3, for which python3-mpi4py is
// installed). No mpirun, python or mpi4py: a skipped run saying why.
PeerRun RunMpi4pyRows(const std::string& python, bool quick);

}  // namespace mproc::bench

#endif  // MPROC_BENCH_REPORT_MPI_PEER_H_
