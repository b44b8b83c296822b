# Seed 003 Creating Processes: worker('A')
from multiprocessing import Process

def worker(name):
    print(f"Worker {name} starting")

if __name__ == '__main__':  # Required on Windows!
    p = Process(target=worker, args=('A',))
    p.start()
    p.join()  # Wait for completion
