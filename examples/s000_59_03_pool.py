# Seed 000 §59.3: Relationship to the GIL (Pool)
from multiprocessing import Pool

def square(x):
    return x * x

with Pool() as pool:
    print(pool.map(square, range(10)))
