#!/usr/bin/env python3
"""CPython multiprocessing peer benchmark for mproc's benchmark report.

Usage:
    python3 bench/peers/cpython_mp.py [--quick] [--only ROW_ID[,ROW_ID...]]

Measures CPython's own multiprocessing (and a few related stdlib facilities)
on this machine so the report can compute mproc/CPython ratios.
Standard library only; Python 3.11 or later.

Output protocol (stdout carries ONLY JSON lines, flushed one by one):

  * first line, a header:
        {"peer": "cpython", "version": "3.11.7", "quick": false,
         "default_start_method": "fork"}
  * then one line per row, in a fixed order:
        {"row": "<row id>", "samples": [<float>, ...], "unit": "ns",
         "note": "<optional short text>"}
    Each sample is the raw figure of one repetition (no median taken here):
    the repetition's elapsed time (time.perf_counter_ns) divided by the
    number of operations it performed, i.e. nanoseconds per operation.
  * or, for a row that cannot run here (start method unavailable, only one
    allowed CPU, an exception, a timeout):
        {"row": "<row id>", "skipped": "<reason>"}

Full mode runs 5 repetitions per row (3 for the slow process-start and
pool-create rows), as the report's C++ rows do; --quick runs 3 repetitions with smaller
iteration counts.
Progress and warnings go to stderr.  The exit code is 0 whenever the script
ran (argument errors aside).
"""

import argparse
import concurrent.futures
import json
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
from multiprocessing import shared_memory

_now = time.perf_counter_ns


# --------------------------------------------------------------------------
# Worker functions: module top level so that they pickle for spawn and
# forkserver.
# --------------------------------------------------------------------------

def noop():
    pass


def square(x):
    return x * x


def _pin_self(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _queue_producer(q, ctrl, n, reps, cpu=None):
    """Put n small ints into q once per repetition, each time on a go signal."""
    _pin_self(cpu)
    for _ in range(reps):
        if ctrl.recv() is None:
            break
        put = q.put
        for i in range(n):
            put(i)
    ctrl.close()


def _queue_round_producer(q, barrier, quota, reps):
    """Per repetition: wait for all, then put quota small ints."""
    for _ in range(reps):
        barrier.wait()
        put = q.put
        for i in range(quota):
            put(i)


def _bytes_producer(q, size, n, reps):
    """Put n items of `size` bytes into q per repetition (one bytes object, built once)."""
    item = bytes(size)
    for _ in range(reps):
        for _ in range(n):
            q.put(item)


def _shm_producer(q, size, n, reps):
    """A careful user's hand-off: per item a fresh SharedMemory, stamped, its name queued;
    the consumer attaches, reads, closes and unlinks it. The producer hands the segment's
    tracking to the consumer (3.11's resource tracker would otherwise report every one as
    leaked and unlink it again at exit: the workaround its users apply by hand)."""
    from multiprocessing import resource_tracker
    for r in range(reps):
        for i in range(n):
            shm = shared_memory.SharedMemory(create=True, size=size)
            resource_tracker.unregister(shm._name, "shared_memory")
            shm.buf[0:8] = (r * n + i).to_bytes(8, "little")
            q.put(shm.name)
            shm.close()


def _pipe_echo(conn, cpu):
    """Pin to cpu first, then echo every message until None arrives."""
    _pin_self(cpu)
    conn.send("ready")
    recv, send = conn.recv, conn.send
    while True:
        msg = recv()
        if msg is None:
            break
        send(msg)
    conn.close()


def _listener_serve(address, authkey, count, ready):
    """Accept (and authenticate) `count` clients, closing each at once."""
    from multiprocessing.connection import Listener
    with Listener(address, family="AF_UNIX", authkey=authkey) as listener:
        ready.send("ready")
        ready.close()
        for _ in range(count):
            try:
                listener.accept().close()
            except Exception:  # a client that went away mid-handshake
                pass


def _manager_dict_worker(d, n, reps, conn):
    """Time n `d[i % 16] = i` per repetition; send back ns per op."""
    d[0] = 0  # untimed: opens this process's connection to the manager
    for _ in range(reps):
        t0 = _now()
        for i in range(n):
            d[i % 16] = i
        conn.send((_now() - t0) / n)
    conn.close()


def _manager_crowd_worker(d, n, reps, barrier):
    """Per repetition: wait for all, do n `d[i % 16] = i`, wait for all."""
    d[0] = 0  # untimed: opens this process's connection to the manager
    for _ in range(reps):
        barrier.wait()
        for i in range(n):
            d[i % 16] = i
        barrier.wait()


# --------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------

class Skip(Exception):
    """Raised by a row that cannot run here; the message is the reason."""


class RowTimeout(Exception):
    pass


def _log(msg):
    print(f"[cpython_mp] {msg}", file=sys.stderr, flush=True)


def _emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _reap(p):
    """Join a child Process; terminate/kill it if it does not go away."""
    if p is None:
        return
    try:
        p.join(10)
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)
    except Exception as e:  # pragma: no cover - best effort cleanup
        _log(f"cleanup of {p!r} failed: {e!r}")


def _timed_loop(fn, n):
    """ns per call of fn() over n calls."""
    t0 = _now()
    for _ in range(n):
        fn()
    return (_now() - t0) / n


class Cfg:
    def __init__(self, quick):
        self.quick = quick
        self.reps = 3 if quick else 5
        self.slow_reps = 3
        self.ctx = mp.get_context()  # platform default
        self.default_method = mp.get_start_method()

    def n(self, full, quick):
        return quick if self.quick else full


# --------------------------------------------------------------------------
# Rows.  Each returns (samples, note); raise Skip(reason) when unavailable.
# --------------------------------------------------------------------------

def _process_row(method, full_n, quick_n):
    def row(cfg):
        if method not in mp.get_all_start_methods():
            raise Skip(f"start method {method!r} not available on this platform")
        ctx = mp.get_context(method)
        n = cfg.n(full_n, quick_n)

        def once():
            p = ctx.Process(target=noop)
            p.start()
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"child exit code {p.exitcode}")

        once()  # warm-up (starts the forkserver, warms imports/caches)
        samples = [_timed_loop(once, n) for _ in range(cfg.slow_reps)]
        return samples, f"{n} start+join per repetition"
    return row


def row_lock(cfg):
    lock = cfg.ctx.Lock()
    n = cfg.n(200_000, 50_000)
    acquire, release = lock.acquire, lock.release
    for _ in range(1000):
        acquire()
        release()
    samples = []
    for _ in range(cfg.reps):
        t0 = _now()
        for _ in range(n):
            acquire()
            release()
        samples.append((_now() - t0) / n)
    return samples, f"{n} acquire+release pairs per repetition"


def _pin_pair(cross):
    """(original affinity, parent cpu, child cpu) for a pinned row; Skip when impossible."""
    if not hasattr(os, "sched_setaffinity") or not hasattr(os, "sched_getaffinity"):
        raise Skip("os.sched_setaffinity not available on this platform")
    original = os.sched_getaffinity(0)
    allowed = sorted(original)
    if cross and len(allowed) < 2:
        raise Skip(f"only {len(allowed)} CPU allowed by sched_getaffinity")
    return original, allowed[0], allowed[1] if cross else allowed[0]


def _queue_row(kind, pin=None):
    # pin: None (unpinned), "same" or "cross" (parent and producer on one CPU or two).
    def row(cfg):
        ctx = cfg.ctx
        original = None
        child_cpu = None
        if pin is not None:
            original, parent_cpu, child_cpu = _pin_pair(pin == "cross")
            os.sched_setaffinity(0, {parent_cpu})
        q = ctx.Queue() if kind == "Queue" else ctx.SimpleQueue()
        n = cfg.n(100_000, 20_000)
        parent_ctrl, child_ctrl = ctx.Pipe()
        p = ctx.Process(target=_queue_producer, args=(q, child_ctrl, n, cfg.reps, child_cpu))
        samples = []
        try:
            p.start()
            child_ctrl.close()
            get = q.get
            for _ in range(cfg.reps):
                parent_ctrl.send(1)  # go
                t0 = _now()
                for _ in range(n):
                    get()
                samples.append((_now() - t0) / n)
        finally:
            try:
                parent_ctrl.close()
            except Exception:
                pass
            _reap(p)
            if kind == "Queue":
                q.close()
                q.join_thread()
            else:
                q.close()
            if original is not None:
                os.sched_setaffinity(0, original)
        where = "" if pin is None else f", pinned ({pin} CPU)"
        return samples, f"{n} ints per repetition, 1 producer child, parent consumes{where}"
    return row


def _queue_producers_row(producers):
    # As mproc.queue.producers.N: each repetition is a round split evenly between the
    # producers, all started together; the parent gets every item of the round.
    def row(cfg):
        ctx = cfg.ctx
        quota = max(1, cfg.n(64_000, 16_000) // producers)
        n = quota * producers
        q = ctx.Queue()
        barrier = ctx.Barrier(producers + 1)
        ps = [ctx.Process(target=_queue_round_producer, args=(q, barrier, quota, cfg.reps))
              for _ in range(producers)]
        samples = []
        try:
            for p in ps:
                p.start()
            get = q.get
            for _ in range(cfg.reps):
                barrier.wait()
                t0 = _now()
                for _ in range(n):
                    get()
                samples.append((_now() - t0) / n)
        finally:
            for p in ps:
                _reap(p)
            q.close()
            q.join_thread()
        return samples, (f"start method {cfg.default_method}; {producers} producer children x "
                         f"{quota} ints per repetition, parent consumes")
    return row


def _pipe_row(cross, size=16):
    def row(cfg):
        if not hasattr(os, "sched_setaffinity") or not hasattr(os, "sched_getaffinity"):
            raise Skip("os.sched_setaffinity not available on this platform")
        original = os.sched_getaffinity(0)
        allowed = sorted(original)
        if cross:
            if len(allowed) < 2:
                raise Skip(f"only {len(allowed)} CPU allowed by sched_getaffinity")
            parent_cpu, child_cpu = allowed[0], allowed[1]
        else:
            parent_cpu = child_cpu = allowed[0]
        ctx = cfg.ctx
        n = cfg.n(10_000, 2_000)
        payload = b"x" * size
        parent_conn, child_conn = ctx.Pipe()
        p = None
        samples = []
        try:
            os.sched_setaffinity(0, {parent_cpu})
            p = ctx.Process(target=_pipe_echo, args=(child_conn, child_cpu))
            p.start()
            child_conn.close()
            if parent_conn.recv() != "ready":
                raise RuntimeError("echo child did not report ready")
            send, recv = parent_conn.send, parent_conn.recv
            for _ in range(200):  # warm-up
                send(payload)
                recv()
            for _ in range(cfg.reps):
                t0 = _now()
                for _ in range(n):
                    send(payload)
                    recv()
                samples.append((_now() - t0) / n)
            send(None)
        finally:
            try:
                parent_conn.close()
            except Exception:
                pass
            _reap(p)
            os.sched_setaffinity(0, original)
        return samples, (f"{n} round trips of {size}-byte bytes per repetition, "
                         f"parent cpu {parent_cpu}, child cpu {child_cpu}")
    return row


def row_listener_connect(cfg):
    import shutil
    import tempfile
    from multiprocessing.connection import Client
    n = cfg.n(1000, 200)
    warm = 50
    tmp = tempfile.mkdtemp(prefix="mproc-bench-")
    address = os.path.join(tmp, "listener.sock")
    authkey = b"k" * 32
    r, w = cfg.ctx.Pipe(duplex=False)
    p = cfg.ctx.Process(target=_listener_serve, args=(address, authkey, warm + n * cfg.reps, w))
    samples = []
    try:
        p.start()
        w.close()
        if r.recv() != "ready":
            raise RuntimeError("listener child did not report ready")

        def once():
            Client(address, family="AF_UNIX", authkey=authkey).close()

        for _ in range(warm):
            once()
        samples = [_timed_loop(once, n) for _ in range(cfg.reps)]
    finally:
        _reap(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return samples, f"{n} Client() connects with a 32-byte authkey per repetition, Unix socket"


def _close_pool(pool, ok):
    if ok:
        pool.close()
    else:
        pool.terminate()
    pool.join()


def row_pool_create(cfg):
    ctx = cfg.ctx
    n = cfg.n(4, 2)

    def once():
        pool = ctx.Pool(2)
        pool.close()
        pool.join()

    once()  # warm-up
    samples = [_timed_loop(once, n) for _ in range(cfg.slow_reps)]
    return samples, f"start method {cfg.default_method}; {n} cycles per repetition"


def _pool_row(body):
    """Create a Pool(2) before timing, run body(cfg, pool) -> (samples, note)."""
    def row(cfg):
        pool = cfg.ctx.Pool(2)
        ok = False
        try:
            pool.map(square, range(1000))  # warm-up: workers up and running
            samples, note = body(cfg, pool)
            ok = True
        finally:
            _close_pool(pool, ok)
        return samples, f"start method {cfg.default_method}; {note}"
    return row


def _body_map_default(cfg, pool):
    n = cfg.n(10 ** 6, 10 ** 5)
    it = range(n)
    samples = []
    for _ in range(cfg.reps):
        t0 = _now()
        pool.map(square, it)
        samples.append((_now() - t0) / n)
    return samples, f"map of {n} items, default chunksize"


def _body_map_chunk1(cfg, pool):
    n = cfg.n(2 * 10 ** 4, 2000)
    it = range(n)
    samples = []
    for _ in range(cfg.reps):
        t0 = _now()
        pool.map(square, it, chunksize=1)
        samples.append((_now() - t0) / n)
    return samples, f"map of {n} items, chunksize=1"


def _body_apply(cfg, pool):
    n = cfg.n(2000, 300)
    apply = pool.apply
    for _ in range(50):
        apply(square, (3,))
    samples = []
    for _ in range(cfg.reps):
        t0 = _now()
        for _ in range(n):
            apply(square, (3,))
        samples.append((_now() - t0) / n)
    return samples, f"{n} synchronous apply calls per repetition"


def _body_apply_async(cfg, pool):
    n = cfg.n(2000, 500)
    aa = pool.apply_async
    [r.get() for r in [aa(square, (i,)) for i in range(100)]]  # warm-up
    samples = []
    for _ in range(cfg.reps):
        t0 = _now()
        results = [aa(square, (i,)) for i in range(n)]
        for r in results:
            r.get()
        samples.append((_now() - t0) / n)
    return samples, f"{n} apply_async submitted then all get() per repetition"


def row_executor_submit(cfg):
    n = cfg.n(1000, 200)
    ex = concurrent.futures.ProcessPoolExecutor(2, mp_context=cfg.ctx)
    try:
        list(ex.map(square, range(200)))  # warm-up: start the workers
        submit = ex.submit
        for _ in range(50):
            submit(square, 3).result()
        samples = []
        for _ in range(cfg.reps):
            t0 = _now()
            for _ in range(n):
                submit(square, 3).result()
            samples.append((_now() - t0) / n)
    finally:
        ex.shutdown(wait=True)
    return samples, (f"start method {cfg.default_method}; "
                     f"{n} submit().result() per repetition")


def row_manager_dict(cfg):
    ctx = cfg.ctx
    n = cfg.n(2000, 500)
    samples = []
    with ctx.Manager() as m:
        d = m.dict()
        d[0] = 0  # prime the manager
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_manager_dict_worker,
                        args=(d, n, cfg.reps, child_conn))
        try:
            p.start()
            child_conn.close()
            for _ in range(cfg.reps):
                samples.append(float(parent_conn.recv()))
        finally:
            parent_conn.close()
            _reap(p)
        if p.exitcode != 0:
            raise RuntimeError(f"manager dict child exit code {p.exitcode}")
    return samples, (f"start method {cfg.default_method}; {n} d[i % 16] = i "
                     f"per repetition, timed in the child")


def row_manager_dict_crowd(cfg, clients=64):
    ctx = cfg.ctx
    n = cfg.n(100, 20)
    samples = []
    with ctx.Manager() as m:
        d = m.dict()
        d[0] = 0
        barrier = ctx.Barrier(clients + 1)
        ps = [ctx.Process(target=_manager_crowd_worker, args=(d, n, cfg.reps, barrier))
              for _ in range(clients)]
        try:
            for p in ps:
                p.start()
            for _ in range(cfg.reps):
                barrier.wait()
                t0 = _now()
                barrier.wait()
                samples.append((_now() - t0) / (clients * n))
        finally:
            for p in ps:
                _reap(p)
        bad = [p.exitcode for p in ps if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"manager crowd children exit codes {bad}")
    return samples, (f"start method {cfg.default_method}; {clients} processes x {n} "
                     f"d[i % 16] = i per repetition, wall time / all ops")


def row_value_incr(cfg):
    v = cfg.ctx.Value("i", 0)
    n = cfg.n(200_000, 50_000)
    lock = v.get_lock()
    for _ in range(1000):
        with lock:
            v.value += 1
    samples = []
    for _ in range(cfg.reps):
        t0 = _now()
        for _ in range(n):
            with v.get_lock():
                v.value += 1
        samples.append((_now() - t0) / n)
    return samples, f"{n} locked increments per repetition"


def _create_kept_row(what, make):
    # Objects made and kept, 1000 at a time (then dropped together), as mproc's rows do.
    def row(cfg):
        n = cfg.n(8_000, 4_000)
        samples = []
        for _ in range(cfg.reps):
            held = []
            t0 = _now()
            for _ in range(n):
                held.append(make(cfg.ctx))
                if len(held) == 1000:
                    held.clear()
            samples.append((_now() - t0) / n)
        return samples, f"{n} {what} made (kept 1000 at a time) per repetition"
    return row


def _hold_row(count):
    # count Locks and count Values made and held at once, then dropped: per object.
    def row(cfg):
        samples = []
        for _ in range(cfg.slow_reps):
            locks, values = [], []
            t0 = _now()
            for _ in range(count):
                locks.append(cfg.ctx.Lock())
                values.append(cfg.ctx.Value("i", 0))
            samples.append((_now() - t0) / (2 * count))
            del locks, values
        return samples, f"{count} Locks and {count} Values held at once, per object"
    return row


def _handoff_row(producer, size, full_n, quick_n, what):
    # As mproc.shared_bytes.handoff_*: a producer child puts items, the parent gets each one
    # (and, for shared memory, attaches, reads the stamp, closes and unlinks); per item.
    def row(cfg):
        ctx = cfg.ctx
        n = cfg.n(full_n, quick_n)
        q = ctx.Queue(2)
        p = ctx.Process(target=producer, args=(q, size, n, cfg.reps + 1))
        samples = []
        try:
            p.start()

            def take():
                item = q.get(timeout=60)
                if isinstance(item, str):
                    shm = shared_memory.SharedMemory(name=item)
                    int.from_bytes(shm.buf[0:8], "little")
                    shm.close()
                    shm.unlink()
                elif len(item) != size:
                    raise RuntimeError("short item")

            for _ in range(n):  # warm-up repetition
                take()
            for _ in range(cfg.reps):
                samples.append(_timed_loop(take, n))
        finally:
            _reap(p)
            q.close()
            q.join_thread()
        return samples, f"start method {cfg.default_method}; {what}; {n} items per repetition"
    return row


def row_shm_create(cfg):
    n = cfg.n(1000, 200)
    size = 1 << 20

    def once():
        s = shared_memory.SharedMemory(create=True, size=size)
        s.close()
        s.unlink()

    for _ in range(10):  # warm-up (starts the resource tracker)
        once()
    samples = [_timed_loop(once, n) for _ in range(cfg.reps)]
    return samples, f"{n} create+close+unlink of 1 MiB per repetition"


def _pickle_row(make, full_n, quick_n, what):
    def row(cfg):
        x = make()
        n = cfg.n(full_n, quick_n)
        dumps, loads, proto = pickle.dumps, pickle.loads, pickle.HIGHEST_PROTOCOL
        if loads(dumps(x, protocol=proto)) != x:
            raise RuntimeError("pickle round trip mismatch")
        for _ in range(min(n, 100)):
            loads(dumps(x, protocol=proto))
        samples = []
        for _ in range(cfg.reps):
            t0 = _now()
            for _ in range(n):
                loads(dumps(x, protocol=proto))
            samples.append((_now() - t0) / n)
        return samples, f"{what}; protocol {proto}; {n} round trips per repetition"
    return row


ROWS = [
    ("cpython.process.fork", _process_row("fork", 20, 5)),
    ("cpython.process.spawn", _process_row("spawn", 5, 2)),
    ("cpython.process.forkserver", _process_row("forkserver", 10, 3)),
    ("cpython.lock", row_lock),
    ("cpython.lock_create", _create_kept_row("mp.Lock()", lambda ctx: ctx.Lock())),
    ("cpython.value_create", _create_kept_row("mp.Value('i')", lambda ctx: ctx.Value("i", 0))),
    ("cpython.hold_locks_values.1000", _hold_row(1000)),
    ("cpython.hold_locks_values.10000", _hold_row(10_000)),
    ("cpython.queue.1p1c", _queue_row("Queue")),
    ("cpython.simplequeue.1p1c", _queue_row("SimpleQueue")),
    ("cpython.queue.1p1c.same_cpu", _queue_row("Queue", pin="same")),
    ("cpython.queue.1p1c.cross_cpu", _queue_row("Queue", pin="cross")),
    ("cpython.queue.producers.1", _queue_producers_row(1)),
    ("cpython.queue.producers.16", _queue_producers_row(16)),
    ("cpython.queue.producers.64", _queue_producers_row(64)),
    ("cpython.pipe.roundtrip.same_cpu", _pipe_row(cross=False)),
    ("cpython.pipe.roundtrip.cross_cpu", _pipe_row(cross=True)),
    ("cpython.pipe.roundtrip_4KiB.same_cpu", _pipe_row(cross=False, size=4096)),
    ("cpython.pipe.roundtrip_4KiB.cross_cpu", _pipe_row(cross=True, size=4096)),
    ("cpython.listener.connect_auth", row_listener_connect),
    ("cpython.pool.create", row_pool_create),
    ("cpython.pool.map_default", _pool_row(_body_map_default)),
    ("cpython.pool.map_chunk1", _pool_row(_body_map_chunk1)),
    ("cpython.pool.apply", _pool_row(_body_apply)),
    ("cpython.pool.apply_async", _pool_row(_body_apply_async)),
    ("cpython.executor.submit", row_executor_submit),
    ("cpython.manager.dict", row_manager_dict),
    ("cpython.manager.dict_64_clients", row_manager_dict_crowd),
    ("cpython.value.incr", row_value_incr),
    ("cpython.shm.create", row_shm_create),
    ("cpython.queue.bytes_64MiB", _handoff_row(_bytes_producer, 64 << 20, 4, 2,
                                               "64 MiB bytes items through mp.Queue(2)")),
    ("cpython.shared_memory.handoff_64MiB", _handoff_row(
        _shm_producer, 64 << 20, 50, 10,
        "a fresh 64 MiB SharedMemory per item, its name through mp.Queue(2)")),
    ("cpython.pickle.int", _pickle_row(lambda: 12345, 200_000, 50_000, "int 12345")),
    ("cpython.pickle.str64", _pickle_row(lambda: "s" * 64, 200_000, 50_000,
                                         "64-character str")),
    ("cpython.pickle.floats1k", _pickle_row(
        lambda: [float(i) + 0.5 for i in range(128)], 50_000, 10_000,
        "list of 128 floats")),
    ("cpython.pickle.bytes1m", _pickle_row(lambda: bytes(1 << 20), 300, 60,
                                           "1 MiB bytes")),
    ("cpython.pickle.dict_of_lists", _pickle_row(
        lambda: {f"k{i}": list(range(16)) for i in range(16)}, 20_000, 4_000,
        "dict of 16 keys, each a list of 16 ints")),
]

ROW_IDS = [rid for rid, _ in ROWS]


def _on_alarm(signum, frame):
    raise RowTimeout("row timed out")


def _stop_helpers():
    """Best effort: stop (and reap) the forkserver and resource tracker
    processes now, so none outlives this script (uses private helpers that
    exist in 3.11+, guarded in case they change)."""
    try:
        from multiprocessing import forkserver
        stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
        if stop is not None:
            stop()
    except Exception as e:
        _log(f"warning: stopping the forkserver failed: {e!r}")
    try:
        from multiprocessing import resource_tracker
        stop = getattr(getattr(resource_tracker, "_resource_tracker", None),
                       "_stop", None)
        if stop is not None:
            stop()
    except Exception as e:
        _log(f"warning: stopping the resource tracker failed: {e!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 repetitions with smaller iteration counts")
    ap.add_argument("--only", action="append", default=[],
                    metavar="ROW_ID[,ROW_ID...]",
                    help="run only these rows (comma separated, repeatable)")
    ap.add_argument("--list", action="store_true", help="list row ids to stderr")
    args = ap.parse_args(argv)

    if args.list:
        for rid in ROW_IDS:
            print(rid, file=sys.stderr)
        return 0

    wanted = None
    if args.only:
        wanted = {w.strip() for item in args.only for w in item.split(",") if w.strip()}
        for w in sorted(wanted - set(ROW_IDS)):
            _log(f"warning: unknown row id {w!r} ignored")

    cfg = Cfg(args.quick)
    _emit({"peer": "cpython", "version": sys.version.split()[0],
           "quick": bool(args.quick),
           "default_start_method": cfg.default_method})

    use_alarm = hasattr(signal, "SIGALRM")
    if use_alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    timeout = 60 if args.quick else 300

    t_start = time.monotonic()
    for rid, fn in ROWS:
        if wanted is not None and rid not in wanted:
            continue
        t_row = time.monotonic()
        try:
            if use_alarm:
                signal.alarm(timeout)
            try:
                samples, note = fn(cfg)
            finally:
                if use_alarm:
                    signal.alarm(0)
            out = {"row": rid, "samples": [float(s) for s in samples], "unit": "ns"}
            if note:
                out["note"] = note
            _emit(out)
            _log(f"{rid}: done in {time.monotonic() - t_row:.2f} s")
        except Skip as e:
            _emit({"row": rid, "skipped": str(e)})
            _log(f"{rid}: skipped: {e}")
        except BaseException as e:  # one row must not kill the run
            if isinstance(e, KeyboardInterrupt):
                raise
            reason = f"{type(e).__name__}: {e}"
            _emit({"row": rid, "skipped": reason})
            _log(f"{rid}: failed: {reason}")
    _stop_helpers()
    _log(f"all rows done in {time.monotonic() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        sys.stdout.flush()
    sys.exit(rc)
