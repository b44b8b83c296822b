# Seed 000 §59.10: Process
from multiprocessing import Process

def run(name):
    print("hello", name)

if __name__ == "__main__":
    p = Process(target=run, args=("worker-1",))
    p.start()
    p.join()
    print(p.exitcode)
