"""mpi4py.futures' MPIPoolExecutor, the peer of mproc's MpiExecutor rows in the report.

Run by bench/report/mpi_peer.cc as
    mpirun --mca pml ob1 -n 3 python3 -m mpi4py.futures mpi4py_futures.py [--quick]
(rank 0 runs this script; ranks 1 and 2 serve). Prints JSON lines, as cpython_mp.py does: a
header with the versions, then {"row": id, "samples": [ns per op, one per repetition],
"note": ...}. The work is the same as mpi/bench/mpi_rows.cc's: square an int.
"""
import json
import sys
import time

import mpi4py
from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor


def square(x):
    return x * x


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    quick = "--quick" in sys.argv
    reps = 3 if quick else 5
    emit({"version": "mpi4py %s (CPython %s), %s" % (
        mpi4py.__version__, sys.version.split()[0],
        MPI.Get_library_version().split(",")[0].strip())})
    with MPIPoolExecutor() as ex:
        list(ex.map(square, range(200)))  # warm-up: the workers are up
        n = 100 if quick else 300
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                ex.submit(square, 3).result()
            samples.append((time.perf_counter_ns() - t0) / n)
        emit({"row": "mpi4py.futures.submit", "samples": samples,
              "note": "MPIPoolExecutor().submit(square, 3).result(), one at a time, "
                      "%d per repetition" % n})
        for chunk, items, qitems in ((1, 1500, 500), (100, 100000, 20000)):
            n = qitems if quick else items
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                out = list(ex.map(square, range(n), chunksize=chunk))
                samples.append((time.perf_counter_ns() - t0) / n)
                assert out[-1] == (n - 1) * (n - 1)
            emit({"row": "mpi4py.futures.map_chunk%d" % chunk, "samples": samples,
                  "note": "MPIPoolExecutor().map(square) over %d ints, chunksize %d, "
                          "2 worker ranks; per item" % (n, chunk)})


if __name__ == "__main__":
    main()
