# Seed 000 §59.2: Process Isolation
from multiprocessing import Process

x = []

def worker():
    x.append(1)
    print("child:", x)

p = Process(target=worker)
p.start()
p.join()
print("parent:", x)
