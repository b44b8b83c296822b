# Seed 000 §59.8: The Main Module Rule
from multiprocessing import Process

def worker():
    print("work")

if __name__ == "__main__":
    p = Process(target=worker)
    p.start()
    p.join()
