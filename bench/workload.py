"""Deterministic benchmark workload: a message file and the config catalogue it needs.

python -m bench.workload --n 20000 --keys 500 --seed 7 --out DIR
writes DIR/messages.jsonl (one message per line, bytes) and DIR/catalogue.json (the
sample config server's catalogue: a JSON list of configurations).

Shape (all from one ``random.Random(seed)``):
* K distinct (customerId, tscId) keys, drawn with a skew (some keys are hot), so keys repeat;
* ~5 % poison lines, one of: invalid JSON, a JSON array, a missing id, an empty id, an
  unknown operation, non-UTF-8 bytes, a line over ``--max_message_bytes`` (dead letters at
  stage ``parse``);
* the rest a mix of create (45 %), update (40 %), delete (15 %), operation case varied;
* the catalogue: ~6 % of keys have no configuration (404, stage ``enrich`` for create and
  update), ~6 % an invalid one (bad frequency, unknown time zone, wrong types:
  stage ``validate``), the rest valid configurations of varied frequencies.

Every configuration leaves ``namespace`` out, so every job record lands in the run's
``--job_namespace``: the pipeline's delete takes the namespace of the row stored *before*
its batch, which differs from a one-at-a-time loop when a create and a delete of a new key
share a batch (the create is superseded and never emitted, so consumers see no difference,
but the delete's record key would).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys

JOB_NAMESPACE = 'tsc-bench'
JOB_IMAGE = 'registry.example.com/tsc-runner:1.0'
MAX_MESSAGE_BYTES = 16384  # passed to every contender as --max_message_bytes
POISON_RATE = 0.05
MISSING_RATE = 0.06
INVALID_RATE = 0.06

_FREQUENCIES = ('daily at 02:30', 'every 15 minutes', 'hourly', 'weekdays at 7:45 am',
                'ogni 6 ore', '*/5 * * * *', 'PT30M', 'weekly on mon and fri at 6 pm',
                'monthly on the 15th', 'every 2 hours', 'giornaliero alle 23:15', '@daily')
_TIMEZONES = (None, 'Europe/Rome', 'UTC', 'America/New_York')
_POISON_KINDS = ('invalid_json', 'json_array', 'missing_id', 'empty_id', 'unknown_operation',
                 'not_utf8', 'oversized')


@dataclasses.dataclass(frozen=True)
class Workload:
    messages_path: str
    catalogue_path: str
    messages: int
    keys: int
    poison: int


def key_ids(count: int) -> list[tuple[str, str]]:
    """The K distinct keys; a few carry quotes, spaces, slashes and non-ASCII text."""
    keys = []
    for i in range(count):
        customer = f'cust-{i % max(1, count // 5):04d}'
        tsc = f'tsc-{i:05d}'
        if i % 97 == 13:
            customer = f"o'brien & co {i}"
        if i % 101 == 17:
            tsc = f'report/{i}/è ü'
        keys.append((customer, tsc))
    return keys


def _config(rng: random.Random, customer: str, tsc: str, kind: str) -> dict:
    config = {'customerId': customer, 'tscId': tsc, 'frequency': rng.choice(_FREQUENCIES),
              'parameters': {'format': rng.choice(('pdf', 'csv')), 'rows': rng.randint(1, 999)},
              'owner': 'bench', 'description': 'x' * rng.randint(0, 120)}
    timezone = rng.choice(_TIMEZONES)
    if timezone:
        config['timezone'] = timezone
    if rng.random() < 0.2:
        config['enabled'] = False
    if rng.random() < 0.3:
        config['image'] = f'registry.example.com/tsc-{rng.randint(1, 9)}:1.{rng.randint(0, 9)}'
    if kind == 'invalid':
        flaw = rng.choice(('frequency', 'timezone', 'parameters', 'type'))
        if flaw == 'frequency':
            config['frequency'] = 'every 7 minutes'
        elif flaw == 'timezone':
            config['timezone'] = 'Mars/Olympus_Mons'
        elif flaw == 'parameters':
            config['parameters'] = ['not', 'an', 'object']
        else:
            config['enabled'] = 'yes'
    return config


def _poison(rng: random.Random, kind: str, key: tuple[str, str]) -> bytes:
    customer, tsc = key
    if kind == 'invalid_json':
        return b'{"operation": "create", "customerId": ' + json.dumps(customer).encode()
    if kind == 'json_array':
        return json.dumps(['create', customer, tsc]).encode()
    if kind == 'missing_id':
        return json.dumps({'operation': 'update', 'customerId': customer}).encode()
    if kind == 'empty_id':
        return json.dumps({'operation': 'create', 'customerId': customer, 'tscId': '  '}).encode()
    if kind == 'unknown_operation':
        return json.dumps({'operation': 'archive', 'customerId': customer, 'tscId': tsc}).encode()
    if kind == 'not_utf8':
        return b'{"operation": "create", "customerId": "\xff\xfe", "tscId": "x"}'
    return json.dumps({'operation': 'create', 'customerId': customer, 'tscId': tsc,
                       'pad': 'p' * (MAX_MESSAGE_BYTES + rng.randint(1, 512))}).encode()


def message_lines(n: int, keys: list[tuple[str, str]], seed: int) -> list[bytes]:
    """The N message lines (without newlines), deterministic for ``seed``."""
    rng = random.Random(seed * 1_000_003 + 1)
    # Skewed popularity: weight 1/(rank+10), so hot keys repeat within a batch.
    weights = [1.0 / (rank + 10) for rank in range(len(keys))]
    chosen = rng.choices(range(len(keys)), weights=weights, k=n)
    lines = []
    for index, key_index in enumerate(chosen):
        key = keys[key_index]
        if rng.random() < POISON_RATE:
            lines.append(_poison(rng, _POISON_KINDS[index % len(_POISON_KINDS)], key))
            continue
        roll = rng.random()
        operation = 'create' if roll < 0.45 else 'update' if roll < 0.85 else 'delete'
        if rng.random() < 0.1:
            operation = operation.upper()
        body = {'operation': operation, 'customerId': key[0], 'tscId': key[1],
                'requestId': f'req-{seed}-{index}', 'note': 'n' * rng.randint(0, 60)}
        lines.append(json.dumps(body, ensure_ascii=False).encode('utf-8'))
    return lines


def catalogue(keys: list[tuple[str, str]], seed: int) -> list[dict]:
    """The configuration catalogue: missing keys left out, some configurations invalid."""
    rng = random.Random(seed * 1_000_003 + 2)
    entries = []
    for customer, tsc in keys:
        roll = rng.random()
        if roll < MISSING_RATE:
            continue
        kind = 'invalid' if roll < MISSING_RATE + INVALID_RATE else 'valid'
        entries.append(_config(rng, customer, tsc, kind))
    return entries


def write_lines(path: str, lines: list[bytes]) -> None:
    with open(path, 'wb') as handle:
        for line in lines:
            handle.write(line)
            handle.write(b'\n')


def generate(out_dir: str, n: int = 20000, keys: int = 500, seed: int = 7) -> Workload:
    """Writes ``messages.jsonl`` and ``catalogue.json`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    ids = key_ids(keys)
    lines = message_lines(n, ids, seed)
    messages_path = os.path.join(out_dir, 'messages.jsonl')
    write_lines(messages_path, lines)
    catalogue_path = os.path.join(out_dir, 'catalogue.json')
    with open(catalogue_path, 'w', encoding='utf-8') as handle:
        json.dump(catalogue(ids, seed), handle, ensure_ascii=False)
    poison = sum(1 for line in lines if not _looks_valid(line))
    return Workload(messages_path, catalogue_path, n, keys, poison)


def _looks_valid(line: bytes) -> bool:
    try:
        payload = json.loads(line.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(payload, dict) and len(line) <= MAX_MESSAGE_BYTES
            and all(isinstance(payload.get(f), str) and payload[f].strip()
                    for f in ('operation', 'customerId', 'tscId'))
            and payload['operation'].lower() in ('create', 'update', 'delete'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=20000, help='Messages (default 20000).')
    parser.add_argument('--keys', type=int, default=500, help='Distinct keys (default 500).')
    parser.add_argument('--seed', type=int, default=7, help='Random seed (default 7).')
    parser.add_argument('--out', required=True, help='Directory to write into.')
    args = parser.parse_args(argv)
    workload = generate(args.out, args.n, args.keys, args.seed)
    print(f'{workload.messages} messages ({workload.poison} poison) over {workload.keys} keys: '
          f'{workload.messages_path}, {workload.catalogue_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
