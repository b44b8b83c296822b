# Seed 001 Example 5 "queue ipc": worker(q, n) puts squares
# multiprocessing.Queue passes picklable objects between processes
from multiprocessing import Process, Queue  # IPC primitives

def worker(q, n):  # child process target
    q.put(n * n)  # send result to parent

if __name__ == "__main__":  # spawn guard
    q = Queue()  # shared queue
    ps = [Process(target=worker, args=(q, i)) for i in range(3)]  # children
    for p in ps: p.start()  # start
    for p in ps: p.join()  # wait
    print([q.get() for _ in ps])  # collect squares
