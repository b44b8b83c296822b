# Seed 000 §59.24: Initializers
from multiprocessing import Pool

_state = None

def init_worker(value):
    global _state
    _state = value

def work(x):
    return _state + x

if __name__ == "__main__":
    with Pool(initializer=init_worker, initargs=(10,)) as pool:
        print(pool.map(work, [1, 2, 3]))
