# Seed 002 Pool.apply_async (Non-blocking): .wait()
from multiprocessing import Pool
import time

def square(x):
    time.sleep(2)
    return x * x

if __name__ == "__main__":
    with Pool(2) as pool:
        async_res = pool.apply_async(square, (5,))
        async_res.wait()
        # Just wait until it’s finished
        print("Now safe to get:", async_res.get())

# OUTPUT:
# Now safe to get: 25
