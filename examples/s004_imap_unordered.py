# Seed 004 Common Patterns / Process Pool with imap_unordered: slow_square
from multiprocessing import Pool

def slow_square(x):
    import time
    time.sleep(0.1)
    return x * x

if __name__ == '__main__':
    with Pool(2) as pool:
        for result in pool.imap_unordered(slow_square, range(5)):
            print(f"Got: {result}")
    # Results arrive as they complete, not in order
