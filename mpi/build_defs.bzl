"""Rules for //mpi that exist only where MPI is installed (@mproc_mpi's HAVE_MPI).

Without MPI, the package is empty: `bazel build //...` and `bazel test //...` pass over it, and
nothing else in mproc depends on it.
"""

load("@mproc_mpi//:defs.bzl", "HAVE_MPI", "MPIRUN")

MPIRUN_PATH = MPIRUN

def mpi_cc_library(**kwargs):
    if HAVE_MPI:
        native.cc_library(**kwargs)

def mpi_cc_binary(**kwargs):
    if HAVE_MPI:
        native.cc_binary(**kwargs)

def mpi_cc_test(**kwargs):
    if HAVE_MPI:
        native.cc_test(**kwargs)
