# Seed 000 §59.1: The Role of multiprocessing
from multiprocessing import Process

def worker():
    print("child process")

p = Process(target=worker)
p.start()
p.join()
