# Seed 002 Pool.apply (Blocking, one task at a time): cube
from multiprocessing import Pool

def cube(x):
    return x**3

if __name__ == "__main__":
    with Pool(3) as pool:
        print("Sending task...")
        result = pool.apply(cube, (5,))
        # BLOCKS until done
        print("Got result:", result)
        # Prints 125
        print("Main continues AFTER task is done.")
