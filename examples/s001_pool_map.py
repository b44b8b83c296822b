# Seed 001 Example 2 "Example: Pool / map": heavy(n) over Pool(4)
# Example: Pool / map
# Run in the REPL or save as a .py file and execute with python.
from multiprocessing import Pool

def heavy(n):
    return sum(i*i for i in range(n))

if __name__ == "__main__":
    with Pool(4) as pool:
        print(pool.map(heavy, [10_000, 20_000, 30_000, 40_000]))
