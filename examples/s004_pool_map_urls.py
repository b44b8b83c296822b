# Seed 004 Common Patterns / Worker Pool with map: fetch_url
from multiprocessing import Pool

def fetch_url(url):
    # Simulate work
    return f"fetched: {url}"

if __name__ == '__main__':
    urls = ['a.com', 'b.com', 'c.com', 'd.com']
    with Pool(4) as pool:
        results = pool.map(fetch_url, urls)
    for r in results:
        print(r)
