# Seed 000 §59.4: Process Creation Methods (check available methods)
import multiprocessing as mp

print(mp.get_all_start_methods())
print(mp.get_start_method())
