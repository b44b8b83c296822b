# Seed 001 Example 4 "process pool": square with results + sum
# Processes bypass GIL for CPU-bound tasks
from multiprocessing import Pool  # process pool

def square(n):  # pure function for workers
    return n * n  # compute

if __name__ == "__main__":  # guard required on Windows spawn
    with Pool(4) as pool:  # four worker processes
        results = pool.map(square, range(8))  # parallel map
    print(results)  # [0,1,4,9,16,25,36,49]
    print(sum(results))  # aggregate
