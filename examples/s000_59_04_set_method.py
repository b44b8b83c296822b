# Seed 000 §59.4: Process Creation Methods (set a method)
import multiprocessing as mp

if __name__ == "__main__":
    mp.set_start_method("spawn")
