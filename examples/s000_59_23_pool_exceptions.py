# Seed 000 §59.23: Exceptions in Pools
from multiprocessing import Pool

def fail(x):
    raise ValueError(x)

if __name__ == "__main__":
    with Pool(2) as pool:
        try:
            pool.map(fail, [1, 2, 3])
        except ValueError as exc:
            print("caught:", exc)
