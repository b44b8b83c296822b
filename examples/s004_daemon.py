# Seed 004 Common Patterns / Daemon Processes: background_worker
from multiprocessing import Process
import time

def background_worker():
    while True:
        print("Working...")
        time.sleep(5)

if __name__ == '__main__':
    p = Process(target=background_worker, daemon=True)
    p.start()
    # Main program can continue
    # When main exits, daemon process is terminated
