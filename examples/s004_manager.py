# Seed 004 multiprocessing.Manager: modify_data
from multiprocessing import Process, Manager

def modify_data(d, l):
    d['processed'] = True
    d['count'] += 1
    l.append('done')

if __name__ == '__main__':
    with Manager() as manager:
        shared_dict = manager.dict({'processed': False, 'count': 0})
        shared_list = manager.list()
        
        p = Process(target=modify_data, args=(shared_dict, shared_list))
        p.start()
        p.join()
        
        print(dict(shared_dict))
        # {'processed': True, 'count': 1}
        print(list(shared_list))
        # ['done']
