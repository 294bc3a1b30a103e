"""Run by test_lag_at_the_source in a process of its own, because what it checks, when it fails,
kills the process. It prints what each read raised, then "survived", and exits 0.

    python process_crashes.py timed-out BOOTSTRAP GROUP
    python process_crashes.py refused SASL_BOOTSTRAP GROUP USER
    python process_crashes.py fresh-broker BOOTSTRAP GROUP_PREFIX

timed-out and refused: librdkafka aborts when a client is destroyed on one of that client's own
threads, and Python's garbage collector can run on such a thread (the Python code that completes
an AdminClient's request runs there). Each case leaves a client with requests still in flight,
reachable only from a reference cycle:
- timed-out: a read that timed out, its exception kept (its traceback holds the read's frames,
  and in them the client the reader let go);
- refused: a reader refused by the brokers (a wrong password), dropped along with its exception.
Then every allocation triggers a collection, and the process waits until the requests in flight
have completed on librdkafka's threads.

fresh-broker: 30 readers, each reading a group of its own at once, on a broker that has just
started and is still making and loading its offsets topic: coordinators answer NOT_COORDINATOR,
which made an AdminClient's list_consumer_group_offsets crash the process (librdkafka#5040).
"""

from __future__ import annotations

import gc
import sys
import threading
import time

from rebalancer.adapters.kafka import Connection, GroupReader


def kept_in_a_cycle(value: object) -> None:
    cycle: list[object] = [value]
    cycle.append(cycle)  # only the garbage collector frees this


def failed_then_dropped(reader: GroupReader) -> None:
    """A read that fails, then its exception and the reader left to the garbage collector."""
    try:
        reader.read_group()
    except Exception as e:
        print(type(e).__name__, flush=True)
        kept_in_a_cycle(e)
    kept_in_a_cycle(reader)


def timed_out(bootstrap: str, group: str) -> None:
    reader = GroupReader(Connection(bootstrap, 10.0), group)
    reader.read_group()  # connected: the next read's requests go out at once
    reader.connection = Connection(bootstrap, 0.0005)
    failed_then_dropped(reader)


def refused(bootstrap: str, group: str, user: str) -> None:
    failed_then_dropped(GroupReader(Connection(bootstrap, 2.0, "SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                                               username=user, password=lambda: "not-the-password"), group))


def fresh_broker(bootstrap: str, prefix: str) -> None:
    outcomes: list[str] = []

    def read(group: str) -> None:
        try:
            outcomes.append(GroupReader(Connection(bootstrap, 10.0), group).read_group().state)
        except Exception as e:
            outcomes.append(type(e).__name__)

    readers = [threading.Thread(target=read, args=(f"{prefix}-{i}",)) for i in range(30)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    print(" ".join(sorted(set(outcomes))), len(outcomes), flush=True)


def main() -> int:
    case, bootstrap, group, *rest = sys.argv[1:]
    if case == "fresh-broker":
        fresh_broker(bootstrap, group)
        print("survived", flush=True)
        return 0
    gc.disable()  # the garbage is made first, whole
    if case == "timed-out":
        timed_out(bootstrap, group)
    else:
        refused(bootstrap, group, *rest)
    gc.set_threshold(1)
    gc.enable()
    time.sleep(4)  # the requests in flight end within their 2 s timeout, on librdkafka's threads
    gc.collect()
    print("survived", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
