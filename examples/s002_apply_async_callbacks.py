# Seed 002 Pool.apply_async (Non-blocking): with callbacks (work/on_ok/on_err)
from multiprocessing import Pool
import time

def work(x):
    time.sleep(1)
    # pretend it's slow
    if x == 5:
        raise ValueError("boom")
    return x * x

def on_ok(result):
    print("Result ready:", result)

def on_err(err):
    print("Error:", err)

if __name__ == "__main__":
    with Pool(3) as pool:
        futures = [
            pool.apply_async(work, (i,), callback=on_ok, error_callback=on_err)
            for i in range(8)
        ]
        print("Main can do other stuff while workers run...")
        # Wait for all tasks
        for f in futures:
            f.wait()
        print("All tasks completed")
