"""Output verification: every contender must end in the same state before a figure counts.

The state of a run, timestamps and the source topic (the input path) left out:
* ``configs``: every ``tsc_configurations`` row by (customer_id, tsc_id);
* ``processed``: every ``processed_data`` row by (partition, offset);
* ``jobs``: the latest job record per (customerId, tscId), in output order (the order a
  consumer applies them by key): record key, value and headers;
* ``dead``: the dead-letter stage by source (partition, offset).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from transforms.dead_letters import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_STAGE
from transforms.local_io import record_from_json
from transforms.records import KafkaRecord
from transforms.warehouse import PROCESSED_DATA, TSC_CONFIGURATIONS

_IGNORED = {'updated_at', 'processed_at', 'source_topic'}


class VerificationError(AssertionError):
    """A contender's outputs differ from the expected state."""


@dataclasses.dataclass
class State:
    configs: dict[tuple, tuple]
    processed: dict[tuple, tuple]
    jobs: dict[tuple, tuple]
    dead: dict[tuple, str]

    def summary(self) -> str:
        return (f'{len(self.configs)} configuration rows, {len(self.processed)} processed rows, '
                f'{len(self.jobs)} keys with a job record, {len(self.dead)} dead letters')


def _normalize(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytes):
        return value.decode('utf-8')
    return value


def _rows(table, rows: Iterable[Mapping[str, Any]]) -> dict[tuple, tuple]:
    keep = [name for name in table.column_names if name not in _IGNORED]
    key_names = [name for name in table.primary_key if name not in _IGNORED]
    result = {}
    for row in rows:
        key = tuple(_normalize(row[name]) for name in key_names)
        if key in result:
            raise VerificationError(f'{table.name}: two rows for {key}')
        result[key] = tuple(_normalize(row[name]) for name in keep)
    return result


def _latest_jobs(records: Iterable[KafkaRecord]) -> dict[tuple, tuple]:
    latest = {}
    for record in records:
        key = (record.header('customerId').decode(), record.header('tscId').decode())
        latest[key] = (record.key, record.value, tuple(sorted(record.headers)))
    return latest


def _dead(records: Iterable[KafkaRecord]) -> dict[tuple, str]:
    dead = {}
    for record in records:
        position = (int(record.header(HEADER_SOURCE_PARTITION)),
                    int(record.header(HEADER_SOURCE_OFFSET)))
        if position in dead:
            raise VerificationError(f'two dead letters for source position {position}')
        dead[position] = record.header(HEADER_STAGE).decode()
    return dead


def state_from_memory(tables: Mapping[str, Mapping], jobs: Iterable[KafkaRecord],
                      dead: Iterable[KafkaRecord]) -> State:
    return State(_rows(TSC_CONFIGURATIONS, tables[TSC_CONFIGURATIONS.name].values()),
                 _rows(PROCESSED_DATA, tables[PROCESSED_DATA.name].values()),
                 _latest_jobs(jobs), _dead(dead))


def read_records(path: str) -> list[KafkaRecord]:
    with open(path, encoding='utf-8') as handle:
        return [record_from_json(line) for line in handle if line.strip()]


def state_from_run(database: str, jobs_path: str, dead_path: str) -> State:
    """Reads a run's outputs: the warehouse's SQLite file and the two JSON Lines files."""
    connection = sqlite3.connect(f'file:{database}?mode=ro', uri=True)
    connection.row_factory = sqlite3.Row
    try:
        tables = {table.name: [dict(row) for row in connection.execute(
            f'SELECT * FROM {table.name}')] for table in (TSC_CONFIGURATIONS, PROCESSED_DATA)}
    finally:
        connection.close()
    return State(_rows(TSC_CONFIGURATIONS, tables[TSC_CONFIGURATIONS.name]),
                 _rows(PROCESSED_DATA, tables[PROCESSED_DATA.name]),
                 _latest_jobs(read_records(jobs_path)), _dead(read_records(dead_path)))


def _diff(name: str, expected: Mapping, actual: Mapping, limit: int = 3) -> list[str]:
    problems = []
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    changed = [k for k in expected if k in actual and expected[k] != actual[k]]
    if missing:
        problems.append(f'{name}: {len(missing)} missing, e.g. {missing[:limit]}')
    if extra:
        problems.append(f'{name}: {len(extra)} unexpected, e.g. {extra[:limit]}')
    if changed:
        k = changed[0]
        problems.append(f'{name}: {len(changed)} differ, e.g. {k}: expected {expected[k]!r:.300} '
                        f'got {actual[k]!r:.300}')
    return problems


def compare(expected: State, actual: State, label: str, messages: int | None = None) -> None:
    """Raises ``VerificationError`` naming every difference between the two states."""
    problems = []
    for name in ('configs', 'processed', 'jobs', 'dead'):
        problems += _diff(name, getattr(expected, name), getattr(actual, name))
    if messages is not None:
        positions = set(actual.processed) | set(actual.dead)
        if len(actual.processed) + len(actual.dead) != messages or len(positions) != messages:
            problems.append(f'invariant: {len(actual.processed)} processed + {len(actual.dead)} '
                            f'dead letters for {messages} messages')
    if problems:
        raise VerificationError(f'{label}: outputs differ from the expected state:\n  '
                                + '\n  '.join(problems))


def verify_passthrough(input_path: str, output_path: str, label: str) -> int:
    """The passthrough wrote every input line once (in any order); returns the count."""
    with open(input_path, 'rb') as handle:
        expected = sorted(line.rstrip(b'\n') for line in handle)
    actual = sorted(record.value for record in read_records(output_path))
    if expected != actual:
        raise VerificationError(f'{label}: {len(actual)} records written for {len(expected)} '
                                'input lines, or their bytes differ')
    return len(actual)
