# A realistic job: every .py file of a directory hashed and word-counted by a Pool, the
# results passed on a Queue to a reporter process, a shared counter of files done, per-file
# statistics written into SharedMemory by the workers, and a progress bar on stderr (when it
# is a terminal, as mproc's ProgressBar).
import hashlib
import os
import re
import struct
import sys
from collections import Counter
from multiprocessing import Pool, Process, Queue, Value, shared_memory

STAT = struct.Struct("qqq")  # lines, words, bytes of one file

_counter = None
_shm = None


def init_worker(counter, shm_name):
    global _counter, _shm
    _counter = counter
    _shm = shared_memory.SharedMemory(name=shm_name)


def count_file(job):
    index, path = job
    with open(path, "rb") as f:
        data = f.read()
    words = re.findall(rb"[a-z]+", data.lower())
    STAT.pack_into(_shm.buf, index * STAT.size, data.count(b"\n"), len(words), len(data))
    with _counter.get_lock():
        _counter.value += 1
    counts = Counter(w.decode() for w in words)
    return os.path.basename(path), hashlib.sha256(data).hexdigest(), dict(counts)


def reporter(q):
    rows = []
    while True:
        item = q.get()
        if item is None:
            break
        rows.append(item)
    for name, digest, words in sorted(rows):
        print(f"{digest[:16]}  {words:6d}  {name}")


def main(directory):
    paths = sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".py"))
    counter = Value("q", 0)
    shm = shared_memory.SharedMemory(create=True, size=max(1, len(paths)) * STAT.size)
    q = Queue()
    rep = Process(target=reporter, args=(q,))
    rep.start()
    total = Counter()
    try:
        with Pool(4, initializer=init_worker, initargs=(counter, shm.name)) as pool:
            for done, (name, digest, counts) in enumerate(
                    pool.imap_unordered(count_file, list(enumerate(paths))), 1):
                total.update(counts)
                q.put((name, digest, sum(counts.values())))
                if sys.stderr.isatty():  # a progress bar only where someone watches
                    sys.stderr.write(f"\rfiles {done}/{len(paths)}")
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        q.put(None)
        rep.join()
        lines = words = nbytes = 0
        for i in range(len(paths)):
            l, w, b = STAT.unpack_from(shm.buf, i * STAT.size)
            lines, words, nbytes = lines + l, words + w, nbytes + b
    finally:
        shm.close()
        shm.unlink()
    print(f"files: {counter.value}  lines: {lines}  words: {words}  bytes: {nbytes}")
    top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    print("top words:", ", ".join(f"{w}={n}" for w, n in top))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
