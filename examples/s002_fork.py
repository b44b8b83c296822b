# Seed 002 Start Methods - fork: set_start_method("fork")
from multiprocessing import Process, set_start_method

def worker(x):
    print(f"Worker received {x}")

if __name__ == "__main__":
    set_start_method("fork")
    p = Process(target=worker, args=(99,))
    p.start()
    p.join()
