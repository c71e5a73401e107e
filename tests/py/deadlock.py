#!/usr/bin/env python3
"""A lock-order deadlock between two Python threads, for sentinel's daemon tests.

Thread a takes lock 1 then lock 2, thread b lock 2 then lock 1; a barrier
makes sure both hold their first lock before either asks for its second.
CPython's threading.Lock is a semaphore with no owner recorded in memory,
so sentinel cannot draw the wait-for edges: expect a hang, or a deadlock
if it can.

Protocol (see tests/src/workload.rs): prints "ready", waits for a "go" line
on stdin (exits 0 if stdin closes first), starts the threads and, once both
hold their first lock, prints "tids a=<native tid> b=<native tid>". The
main thread then joins thread a for good; the test kills the process.
"""

import sys
import threading


def wait_go():
    while True:
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)  # stdin closed: the test is gone
        if line.strip() == "go":
            return


def main():
    print("ready", flush=True)
    wait_go()

    lock1, lock2 = threading.Lock(), threading.Lock()
    both_hold_first = threading.Barrier(3)
    tids = {}

    def worker(name, first, second):
        tids[name] = threading.get_native_id()
        first.acquire()
        both_hold_first.wait()
        second.acquire()  # never returns: the other thread holds it
        print(f"error: thread {name} got both locks", flush=True)

    a = threading.Thread(target=worker, args=("a", lock1, lock2), name="deadlock-a")
    b = threading.Thread(target=worker, args=("b", lock2, lock1), name="deadlock-b")
    a.start()
    b.start()
    both_hold_first.wait()
    print(f"tids a={tids['a']} b={tids['b']}", flush=True)
    a.join()  # never returns


if __name__ == "__main__":
    main()
