# Seed 002 Pool.apply_async (Non-blocking): .ready()
from multiprocessing import Pool
import time

def square(x):
    time.sleep(2)
    return x * x

if __name__ == "__main__":
    with Pool(2) as pool:
        async_res = pool.apply_async(square, (5,))
        while not async_res.ready():
            print("Still working...")
            time.sleep(0.5)
        print("Done:", async_res.get())

# OUTPUT:
# Main keeps running...
# Result: 25
