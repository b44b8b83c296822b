# Seed 002 multiprocessing.Process: lifecycle (Worker-1/Worker-2, is_alive, exitcode)
from multiprocessing import Process, current_process
import os, time

def work(n):
    print(f"[{current_process().name}] PID={os.getpid()} start with n={n}")
    time.sleep(1)
    print(f"[{current_process().name}] done")

if __name__ == "__main__":
    p1 = Process(target=work, name="Worker-1", args=(10,))
    p2 = Process(target=work, name="Worker-2", args=(20,))
    p1.start(); p2.start()
    print("Alive?", p1.is_alive(), p2.is_alive())
    p1.join(); p2.join()
    print("Exit codes:", p1.exitcode, p2.exitcode)
