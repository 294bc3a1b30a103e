"""A load generator: produces to a topic at set per-partition rates for a bounded time, then
flushes and exits. Each partition's messages carry one key of their own, as a keyed producer's
would (a hot key makes a hot partition).

    python produce.py --bootstrap HOST:PORT --topic T --rates 0=100,1=100,5=700 --seconds 20

Run as a process of its own, so that librdkafka's handles never outlive the broker inside the
test process.
"""

from __future__ import annotations

import argparse
import sys
import time

from confluent_kafka import Producer


def parse_rates(text: str) -> dict[int, float]:
    rates = {}
    for item in text.split(","):
        partition, _, rate = item.partition("=")
        rates[int(partition)] = float(rate)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rates", required=True, type=parse_rates, help="partition=messages per second, comma-separated")
    parser.add_argument("--seconds", required=True, type=float)
    args = parser.parse_args()
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20, "acks": 1, "log_level": 4})
    began = time.monotonic()
    sent = dict.fromkeys(args.rates, 0)
    while (elapsed := time.monotonic() - began) < args.seconds:
        for partition, rate in args.rates.items():
            due = int(rate * elapsed) - sent[partition]
            for _ in range(max(due, 0)):
                producer.produce(args.topic, value=b"x" * 100, key=f"key-{partition}".encode(), partition=partition)
            sent[partition] += max(due, 0)
        producer.poll(0)
        time.sleep(0.05)
    left = producer.flush(30)
    print(f"produced {sum(sent.values())} messages ({left} unflushed)", flush=True)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
