# Seed 002 Processes vs Threads / Memory model and isolation: global counter in threads vs processes
from threading import Thread
from multiprocessing import Process

counter_thread = 0
counter_process = 0

def bump_thread(n):
    global counter_thread
    for _ in range(n):
        counter_thread += 1
    print("Thread's counter value:", counter_thread)

def bump_process(n):
    global counter_process
    for _ in range(n):
        counter_process += 1
    print("Process's counter value:", counter_process)

if __name__ == "__main__":
    t1 = Thread(target=bump_thread, args=(100_000,))
    t2 = Thread(target=bump_thread, args=(100_000,))
    t1.start(); t2.start()
    t1.join(); t2.join()

    p1 = Process(target=bump_process, args=(100_000,))
    p2 = Process(target=bump_process, args=(100_000,))
    p1.start(); p2.start()
    p1.join(); p2.join()

    print("Process does not see counter in same memory:", counter_process)
    print("Threads see counter in same memory:", counter_thread)
