# Seed 004 multiprocessing.Array: negate
from multiprocessing import Process, Array
import ctypes

def negate(arr):
    for i in range(len(arr)):
        arr[i] = -arr[i]

if __name__ == '__main__':
    arr = Array('i', [1, 2, 3, 4, 5])  # Array of 5 integers
    print(arr[:])
    # [1, 2, 3, 4, 5]
    
    p = Process(target=negate, args=(arr,))
    p.start()
    p.join()
    print(arr[:])
    # [-1, -2, -3, -4, -5]
