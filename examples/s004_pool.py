# Seed 004 multiprocessing.Pool: square [1..5]
from multiprocessing import Pool

def square(x):
    return x * x

if __name__ == '__main__':
    with Pool(processes=4) as pool:
        results = pool.map(square, [1, 2, 3, 4, 5])
        print(results)
        # [1, 4, 9, 16, 25]
