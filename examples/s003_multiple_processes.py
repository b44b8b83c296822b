# Seed 003 Code Examples / Multiple processes: current_process and pids
from multiprocessing import Process, current_process
import os

def worker():
    print(f"Process: {current_process().name}")
    print(f"PID: {os.getpid()}")
    print(f"Parent PID: {os.getppid()}")

if __name__ == '__main__':
    processes = [Process(target=worker, name=f"Worker-{i}")
                 for i in range(4)]
    
    for p in processes:
        p.start()
    
    for p in processes:
        p.join()
