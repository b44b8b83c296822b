# Seed 002 Pool.imap and Pool.imap_unordered (Streaming Results): slow_square demo
from multiprocessing import Pool
import time, random

def slow_square(n):
    # Simulate a task with random delay.
    delay = random.uniform(0.5, 2.0)
    # 0.5–2 seconds
    time.sleep(delay)
    result = n * n
    print(f"Task {n} finished in {delay:.2f}s → {result}")
    return result

def demo_imap():
    print("--- Using imap (ordered results) ---")
    items = [1, 2, 3, 4, 5]
    with Pool(3) as pool:
        # 3 workers
        for res in pool.imap(slow_square, items, chunksize=1):
            print("Got result (ordered):", res)

def demo_imap_unordered():
    print("--- Using imap_unordered (unordered results) ---")
    items = [1, 2, 3, 4, 5]
    with Pool(3) as pool:
        for res in pool.imap_unordered(slow_square, items, chunksize=1):
            print("Got result (unordered):", res)

if __name__ == "__main__":
    demo_imap()
    demo_imap_unordered()
