# Seed 004 Common Patterns / Shared State with Manager: visits
from multiprocessing import Manager, Process

def worker(shared_data):
    shared_data['visits'] += 1

if __name__ == '__main__':
    with Manager() as m:
        data = m.dict(visits=0)
        processes = [Process(target=worker, args=(data,)) for _ in range(10)]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        print(f"Total visits: {data['visits']}")
        # Total visits: 10
