"""mproc_io_mode_tests: one cc_test per I/O mode (base/io_ring.h), so a suite proves each."""

# The modes besides the default (auto, which is plain); each runs the same sources with
# MPROC_IO_MODE set. A mode the kernel lacks is lowered by the library, and the suite still runs.
IO_MODES = ["uring_basic", "uring"]

def mproc_io_mode_tests(name, **kwargs):
    """Declares `name` (default mode) and `name_<mode>` for each io_uring mode."""
    native.cc_test(name = name, **kwargs)
    for mode in IO_MODES:
        env = dict(kwargs.pop("env", {}))
        env["MPROC_IO_MODE"] = mode
        native.cc_test(name = name + "_" + mode, env = env, **kwargs)
