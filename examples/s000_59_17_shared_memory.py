# Seed 000 §59.17: Shared Memory
from multiprocessing import shared_memory

shm = shared_memory.SharedMemory(create=True, size=10)
try:
    shm.buf[:5] = b"hello"
    print(bytes(shm.buf[:5]))
finally:
    shm.close()
    shm.unlink()
