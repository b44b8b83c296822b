# Seed 000 §59.18: Managers
from multiprocessing import Manager, Process

def worker(shared_list):
    shared_list.append("x")

if __name__ == "__main__":
    with Manager() as manager:
        xs = manager.list()
        p = Process(target=worker, args=(xs,))
        p.start()
        p.join()
        print(list(xs))
