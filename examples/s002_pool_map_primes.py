# Seed 002 Pool.map (Blocking Batch Processing): is_prime with timing
from multiprocessing import Pool, cpu_count
import math, time

def is_prime(n: int) -> bool:
    # Check if n is prime (naive method).
    if n < 2: return False
    if n % 2 == 0: return n == 2
    r = int(math.isqrt(n))
    for f in range(3, r+1, 2):
        if n % f == 0:
            return False
    return True

if __name__ == "__main__":
    numbers = [10_000_019, 10_000_079, 10_000_091, 10_000_099]
    with Pool(cpu_count()) as pool:
        start = time.perf_counter()
        # waits for all results
        results = pool.map(is_prime, numbers)
        finish = time.perf_counter()
        total = finish - start
        print(list(zip(numbers, results)))
        print(f"Time elapsed: {total:.2f}s with {cpu_count()} workers")
