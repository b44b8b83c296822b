# Seed 002 Pool.apply_async (Non-blocking): .get()
from multiprocessing import Pool
import time

def square(x):
    time.sleep(2)
    return x * x

if __name__ == "__main__":
    with Pool(2) as pool:
        async_res = pool.apply_async(square, (5,))
        print("Main keeps running...")
        result = async_res.get()
        # Waits here until worker finishes
        print("Result:", result)

# OUTPUT:
# Main keeps running...
# Result: 25
