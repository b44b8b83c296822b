# Seed 004 multiprocessing.Value: worker counter
from multiprocessing import Process, Value
import ctypes

def worker(counter):
    for _ in range(1000):
        with counter.get_lock():
            counter.value += 1

if __name__ == '__main__':
    counter = Value('i', 0)  # signed integer, initial value 0
    processes = [Process(target=worker, args=(counter,)) for _ in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    print(counter.value)
    # 4000
