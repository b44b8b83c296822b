# Seed 002 Start Methods - forkserver: set_start_method("forkserver")
from multiprocessing import Process, set_start_method

def worker(x):
    print(f"Worker received {x}")

if __name__ == "__main__":
    set_start_method("forkserver")
    p = Process(target=worker, args=(123,))
    p.start()
    p.join()
