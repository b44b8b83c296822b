# Seed 002 Pool: Basic Pool Setup (square with cpu_count workers)
from multiprocessing import Pool, cpu_count

def square(x):
    return x * x

if __name__ == "__main__":
    # create pool with N workers
    with Pool(processes=cpu_count()) as pool:
        numbers = [1, 2, 3, 4, 5]
        results = pool.map(square, numbers)
        print(results)
