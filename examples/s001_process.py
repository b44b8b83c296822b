# Seed 001 Example 1 "Example: Process": worker(n) in 3 processes
# Example: Process
# Run in the REPL or save as a .py file and execute with python.
from multiprocessing import Process

def worker(n):
    print("worker", n)

if __name__ == "__main__":
    ps = [Process(target=worker, args=(i,)) for i in range(3)]
    for p in ps: p.start()
    for p in ps: p.join()
