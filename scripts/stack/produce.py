"""Produces a file of messages, one per line, to a Kafka topic (spread over its partitions).

python scripts/stack/produce.py --bootstrap_servers HOST:PORT --topic T FILE
Each line's bytes are sent untouched; the key is "<customerId>/<tscId>" when the line is a JSON
object with both ids, so one TSC's requests stay in one partition, in order.
"""

from __future__ import annotations

import argparse
import json
import sys

from confluent_kafka import Producer


def key_of(line: bytes) -> bytes | None:
    try:
        message = json.loads(line)
        return f'{message["customerId"]}/{message["tscId"]}'.encode()
    except (ValueError, TypeError, KeyError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bootstrap_servers', required=True)
    parser.add_argument('--topic', required=True)
    parser.add_argument('path')
    args = parser.parse_args(argv)
    producer = Producer({'bootstrap.servers': args.bootstrap_servers, 'enable.idempotence': True,
                         'acks': 'all', 'linger.ms': 5})
    sent = 0
    with open(args.path, 'rb') as handle:
        for line in handle:
            line = line.rstrip(b'\n').rstrip(b'\r')
            producer.produce(args.topic, value=line, key=key_of(line))
            sent += 1
            producer.poll(0)
    left = producer.flush(30)
    if left:
        print(f'{left} messages not delivered', file=sys.stderr)
        return 1
    print(f'produced {sent} messages to {args.topic}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
