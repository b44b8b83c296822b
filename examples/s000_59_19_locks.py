# Seed 000 §59.19: Locks
from multiprocessing import Process, Lock

def worker(lock):
    with lock:
        print("critical section")

if __name__ == "__main__":
    lock = Lock()
    processes = [Process(target=worker, args=(lock,)) for _ in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
