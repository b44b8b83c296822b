# Seed 004 multiprocessing.Lock: counter dict
from multiprocessing import Process, Lock

counter = {'value': 0}
lock = Lock()

def increment(n):
    for _ in range(n):
        with lock:
            counter['value'] += 1

if __name__ == '__main__':
    p1 = Process(target=increment, args=(1000,))
    p2 = Process(target=increment, args=(1000,))
    p1.start()
    p2.start()
    p1.join()
    p2.join()
    print(counter['value'])
    # 2000
