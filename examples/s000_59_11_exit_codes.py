# Seed 000 §59.11: Exit Codes
from multiprocessing import Process
import sys

def worker():
    sys.exit(3)

if __name__ == "__main__":
    p = Process(target=worker)
    p.start()
    p.join()
    print(p.exitcode)
