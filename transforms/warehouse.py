"""Warehouse seam: one schema description, its two SQL dialects, and the embedded SQLite writer."""

from __future__ import annotations

import abc
import dataclasses
import functools
import logging
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

_LOGGER = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r'^[A-Za-z_][A-Za-z0-9_]{0,127}$')


def check_identifier(name: str) -> str:
    """Returns ``name`` if it is a plain SQL identifier, else raises ValueError."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f'{name!r} is not a valid table or database name '
                         '(letters, digits and _; not starting with a digit)')
    return name


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str  # STRING, INT, BIGINT, BOOLEAN or TIMESTAMP
    nullable: bool = False


@dataclasses.dataclass(frozen=True)
class Table:
    """A table both dialects are generated from, so they cannot drift."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    hash_partitions: int = 4

    def __post_init__(self):
        check_identifier(self.name)
        if self.column_names[:len(self.primary_key)] != self.primary_key:
            # Kudu wants the primary key columns first, in key order.
            raise ValueError(f'table {self.name}: primary key {self.primary_key} must be the '
                             'first columns')

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


TSC_CONFIGURATIONS = Table(
    name='tsc_configurations',
    columns=(
        Column('customer_id', 'STRING'),
        Column('tsc_id', 'STRING'),
        Column('frequency', 'STRING'),
        Column('cron_schedule', 'STRING'),
        Column('time_zone', 'STRING', nullable=True),
        Column('enabled', 'BOOLEAN'),
        Column('config', 'STRING'),
        Column('operation', 'STRING'),
        Column('source_topic', 'STRING'),
        Column('source_partition', 'INT'),
        Column('source_offset', 'BIGINT'),
        Column('updated_at', 'TIMESTAMP'),
    ),
    primary_key=('customer_id', 'tsc_id'),
)

PROCESSED_DATA = Table(
    name='processed_data',
    columns=(
        Column('source_topic', 'STRING'),
        Column('source_partition', 'INT'),
        Column('source_offset', 'BIGINT'),
        Column('customer_id', 'STRING'),
        Column('tsc_id', 'STRING'),
        Column('operation', 'STRING'),
        Column('payload', 'STRING'),
        Column('processed_at', 'TIMESTAMP'),
    ),
    primary_key=('source_topic', 'source_partition', 'source_offset'),
)

TABLES = (TSC_CONFIGURATIONS, PROCESSED_DATA)

_SQLITE_TYPES = {'STRING': 'TEXT', 'INT': 'INTEGER', 'BIGINT': 'INTEGER', 'BOOLEAN': 'INTEGER',
                 'TIMESTAMP': 'TEXT'}


def impala_ddl(table: Table, database: str | None = None) -> str:
    """Kudu DDL for Impala: primary key columns first, NOT NULL, hash partitioned."""
    qualified = f'{check_identifier(database)}.{table.name}' if database else table.name
    columns = [f'  {c.name} {c.type}{"" if c.nullable else " NOT NULL"}' for c in table.columns]
    keys = ', '.join(table.primary_key)
    return (f'CREATE TABLE IF NOT EXISTS {qualified} (\n' + ',\n'.join(columns)
            + f',\n  PRIMARY KEY ({keys})\n)\nPARTITION BY HASH ({keys}) '
            f'PARTITIONS {table.hash_partitions}\nSTORED AS KUDU')


def sqlite_ddl(table: Table) -> str:
    """The SQLite equivalent of ``impala_ddl`` for the embedded default."""
    columns = [f'  {c.name} {_SQLITE_TYPES[c.type]}{"" if c.nullable else " NOT NULL"}'
               for c in table.columns]
    return (f'CREATE TABLE IF NOT EXISTS {table.name} (\n' + ',\n'.join(columns)
            + f',\n  PRIMARY KEY ({", ".join(table.primary_key)})\n)')


class StoredState(NamedTuple):
    """What the warehouse holds for one TSC: where its row came from, and its config."""

    source_topic: str
    source_partition: int
    source_offset: int
    config: str | None


class WarehouseError(Exception):
    """A warehouse write failed."""


class TransientWarehouseError(WarehouseError):
    """A failure worth retrying as is: lost connection, expired session, busy database."""


class RejectedRowsError(WarehouseError):
    """The statement was rejected for its content: splitting the batch isolates the bad rows."""


class WarehouseWriter(abc.ABC):
    """Writes batches of rows to the two tables; not picklable, open it in ``setup()``."""

    statements_executed: int = 0

    @abc.abstractmethod
    def create_tables(self) -> None:
        """Creates both tables if they are missing."""

    @abc.abstractmethod
    def read_tsc_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str],
                                                                         StoredState]:
        """Returns the stored state of each key that has a row."""

    @abc.abstractmethod
    def upsert_tsc_configurations(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Inserts or replaces rows of ``tsc_configurations``, keyed by customer and TSC."""

    @abc.abstractmethod
    def delete_tsc_configurations(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Deletes the rows of these keys unless a later offset of the same partition wrote them."""

    @abc.abstractmethod
    def upsert_processed_data(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Inserts or replaces ``processed_data`` rows, keyed by source position."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases connections."""


def _stale_guard(table: str, new: str) -> str:
    return (f'NOT ({table}.source_topic = {new}.source_topic '
            f'AND {table}.source_partition = {new}.source_partition '
            f'AND {table}.source_offset > {new}.source_offset)')


_SQLITE_KEYS_PER_READ = 500


class SqliteWriter(WarehouseWriter):
    """The embedded default: a SQLite file, safe with several workers at once.

    WAL mode and a busy timeout let concurrent workers write without losing rows;
    each batch is one transaction, so a batch is either fully written or not at all.
    """

    def __init__(self, path: str, *, busy_timeout_seconds: float = 60.0, attempts: int = 5):
        self._path = path
        self._attempts = attempts
        self.statements_executed = 0
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._connection = sqlite3.connect(path, timeout=busy_timeout_seconds,
                                           isolation_level=None, check_same_thread=False)
        self._retry_busy(lambda: self._connection.execute('PRAGMA journal_mode=WAL'))
        self._connection.execute('PRAGMA synchronous=NORMAL')

    def _retry_busy(self, action):
        # SQLite skips the busy handler where waiting could deadlock (switching to WAL,
        # schema changes while another connection opens the file): retry those here.
        for attempt in range(1, self._attempts + 1):
            try:
                return action()
            except sqlite3.OperationalError as e:
                if 'locked' not in str(e) and 'busy' not in str(e) or attempt == self._attempts:
                    raise
                time.sleep(0.05 * 2 ** attempt)

    def close(self) -> None:
        self._connection.close()

    def _run(self, statements: Iterable[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        statements = list(statements)
        for attempt in range(1, self._attempts + 1):
            try:
                self._connection.execute('BEGIN IMMEDIATE')
                try:
                    for sql, rows in statements:
                        self._connection.executemany(sql, rows)
                        self.statements_executed += 1
                    self._connection.execute('COMMIT')
                    return
                except BaseException:
                    self._connection.execute('ROLLBACK')
                    raise
            except sqlite3.OperationalError as e:
                if 'locked' not in str(e) and 'busy' not in str(e):
                    raise RejectedRowsError(f'SQLite rejected the batch: {e}') from e
                if attempt == self._attempts:
                    raise TransientWarehouseError(f'SQLite stayed busy: {e}') from e
                time.sleep(0.05 * 2 ** attempt)
            except sqlite3.DatabaseError as e:
                raise RejectedRowsError(f'SQLite rejected the batch: {e}') from e

    def create_tables(self) -> None:
        for ddl in map(sqlite_ddl, TABLES):
            self._retry_busy(functools.partial(self._connection.execute, ddl))

    def read_tsc_states(self, keys):
        states = {}
        keys = list(keys)
        try:
            # One statement per chunk of keys, well under SQLite's bound-parameter limit.
            for start in range(0, len(keys), _SQLITE_KEYS_PER_READ):
                chunk = keys[start:start + _SQLITE_KEYS_PER_READ]
                sql = ('SELECT customer_id, tsc_id, source_topic, source_partition, '
                       'source_offset, config FROM tsc_configurations '
                       'WHERE (customer_id, tsc_id) IN (VALUES '
                       + ', '.join('(?, ?)' for _ in chunk) + ')')
                parameters = [value for key in chunk for value in key]
                for row in self._connection.execute(sql, parameters):
                    states[(row[0], row[1])] = StoredState(row[2], row[3], row[4], row[5])
        except sqlite3.DatabaseError as e:
            raise TransientWarehouseError(f'SQLite read failed: {e}') from e
        return states

    def upsert_tsc_configurations(self, rows):
        table = TSC_CONFIGURATIONS
        self._run([(self._upsert_sql(table, guard=True), _values(table, rows))])

    def delete_tsc_configurations(self, rows):
        sql = ('DELETE FROM tsc_configurations WHERE customer_id = ? AND tsc_id = ? AND NOT ('
               'source_topic = ? AND source_partition = ? AND source_offset > ?)')
        self._run([(sql, [(r['customer_id'], r['tsc_id'], r['source_topic'],
                           r['source_partition'], r['source_offset']) for r in rows])])

    def upsert_processed_data(self, rows):
        self._run([(self._upsert_sql(PROCESSED_DATA, guard=False),
                    _values(PROCESSED_DATA, rows))])

    @staticmethod
    def _upsert_sql(table: Table, *, guard: bool) -> str:
        names = table.column_names
        updates = ', '.join(f'{n} = excluded.{n}' for n in names if n not in table.primary_key)
        sql = (f'INSERT INTO {table.name} ({", ".join(names)}) '
               f'VALUES ({", ".join("?" for _ in names)}) '
               f'ON CONFLICT ({", ".join(table.primary_key)}) DO UPDATE SET {updates}')
        if guard:
            sql += ' WHERE ' + _stale_guard(table.name, 'excluded')
        return sql


def _values(table: Table, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(row[name] for name in table.column_names) for row in rows]


def describe_warehouse(url: str) -> str:
    """The warehouse URL with any secret removed, fit for logs."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password:
        netloc = parsed.netloc.replace(':' + parsed.password + '@', ':***@')
        return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    return url


def check_warehouse_url(url: str) -> str:
    """Validates ``--warehouse`` at construction; raises ValueError saying what to fix."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == 'sqlite':
        if not sqlite_path(url):
            raise ValueError(f'--warehouse sqlite URL needs a path: sqlite:///PATH, got {url!r}')
        return url
    if parsed.scheme == 'impala':
        from transforms.impala_writer import parse_impala_url
        parse_impala_url(url)
        return url
    raise ValueError(f'--warehouse must be sqlite:///PATH or impala://host:port/db, '
                     f'got {describe_warehouse(url)!r}')


def sqlite_path(url: str) -> str:
    prefix = 'sqlite:///'
    return url[len(prefix):] if url.startswith(prefix) else ''


def open_warehouse(url: str, *, impala_clusters: str | None = None,
                   **settings: Any) -> WarehouseWriter:
    """Opens the writer ``--warehouse`` names: ``sqlite:///PATH`` or ``impala://…``.

    With ``impala_clusters`` (the ``--impala_clusters`` file) the writer routes each
    configuration to the cluster it names.
    """
    if impala_clusters:
        from transforms.impala_writer import RoutedWarehouse, load_impala_clusters
        return RoutedWarehouse(*load_impala_clusters(impala_clusters), **settings)
    if url.startswith('sqlite:'):
        writer = SqliteWriter(sqlite_path(url))
        writer.create_tables()
        return writer
    if url.startswith('impala:'):
        from transforms.impala_writer import ImpalaWriter
        return ImpalaWriter.from_url(url, **settings)
    raise ValueError(f'unsupported warehouse {describe_warehouse(url)!r}')
