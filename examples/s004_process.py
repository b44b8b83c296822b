# Seed 004 multiprocessing.Process: greet Alice
from multiprocessing import Process
import os

def greet(name):
    print(f"Hello {name} from process {os.getpid()}")

if __name__ == '__main__':
    p = Process(target=greet, args=('Alice',))
    p.start()
    p.join()
    # Hello Alice from process 12345
