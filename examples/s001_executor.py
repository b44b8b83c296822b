# Seed 001 Example 3 "Example: ProcessPoolExecutor": sq over range(8)
# Example: ProcessPoolExecutor
# Run in the REPL or save as a .py file and execute with python.
from concurrent.futures import ProcessPoolExecutor

def sq(x): return x*x

if __name__ == "__main__":
    with ProcessPoolExecutor() as ex:
        print(list(ex.map(sq, range(8))))
