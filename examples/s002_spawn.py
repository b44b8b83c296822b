# Seed 002 Start Methods - spawn: set_start_method("spawn")
from multiprocessing import Process, set_start_method

def worker(x):
    print(f"Worker received {x}")

if __name__ == "__main__":
    set_start_method("spawn")
    p = Process(target=worker, args=(42,))
    p.start()
    p.join()
