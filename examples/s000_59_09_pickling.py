# Seed 000 §59.9: Pickling and Process Boundaries
from multiprocessing import Process

def worker(data):
    print(data)

if __name__ == "__main__":
    p = Process(target=worker, args=({"x": 1},))
    p.start()
    p.join()
