"""Tests for transforms.warehouse: the schema's two dialects, URL checks and the SQLite writer."""

from __future__ import annotations

import re
import sqlite3
import threading

import pytest

from transforms.warehouse import (
    PROCESSED_DATA,
    TABLES,
    TSC_CONFIGURATIONS,
    Column,
    RejectedRowsError,
    SqliteWriter,
    StoredState,
    Table,
    TransientWarehouseError,
    check_identifier,
    check_warehouse_url,
    describe_warehouse,
    impala_ddl,
    open_warehouse,
    sqlite_ddl,
    sqlite_path,
)

# --- DDL ---------------------------------------------------------------------------------------

_COLUMN_LINE = re.compile(r'^  (?P<name>\w+) (?P<type>\w+)(?P<not_null> NOT NULL)?,?$')


def ddl_columns(ddl: str) -> list[tuple[str, str, bool]]:
    """(name, type, not null) of each column line of a generated CREATE TABLE."""
    columns = []
    for line in ddl.splitlines()[1:]:
        match = _COLUMN_LINE.match(line)
        if match:
            columns.append((match['name'], match['type'], bool(match['not_null'])))
    return columns


@pytest.mark.parametrize('table', TABLES, ids=lambda t: t.name)
def test_impala_ddl(table):
    ddl = impala_ddl(table)
    keys = ', '.join(table.primary_key)

    assert ddl.startswith(f'CREATE TABLE IF NOT EXISTS {table.name} (\n')
    assert ddl_columns(ddl) == [(c.name, c.type, not c.nullable) for c in table.columns]
    # Kudu wants the primary key columns first, in key order.
    assert [name for name, _, _ in ddl_columns(ddl)][:len(table.primary_key)] == list(
        table.primary_key)
    assert all(not_null for name, _, not_null in ddl_columns(ddl) if name in table.primary_key)
    assert f'  PRIMARY KEY ({keys})\n)' in ddl
    assert f'PARTITION BY HASH ({keys}) PARTITIONS {table.hash_partitions}' in ddl
    assert ddl.endswith('\nSTORED AS KUDU')


def test_impala_ddl_with_database():
    assert impala_ddl(PROCESSED_DATA, 'analytics').startswith(
        'CREATE TABLE IF NOT EXISTS analytics.processed_data (')


@pytest.mark.parametrize('database', ['bad-db', 'x; DROP TABLE y', '1db', 'a.b'])
def test_impala_ddl_rejects_bad_database(database):
    with pytest.raises(ValueError, match='not a valid table or database name'):
        impala_ddl(PROCESSED_DATA, database)


@pytest.mark.parametrize('table', TABLES, ids=lambda t: t.name)
def test_sqlite_ddl_matches_impala_ddl(table):
    sqlite = sqlite_ddl(table)
    impala = impala_ddl(table)

    assert [(n, nn) for n, _, nn in ddl_columns(sqlite)] == [
        (n, nn) for n, _, nn in ddl_columns(impala)]
    assert f'PRIMARY KEY ({", ".join(table.primary_key)})' in sqlite
    connection = sqlite3.connect(':memory:')
    connection.execute(sqlite)
    info = connection.execute(f'PRAGMA table_info({table.name})').fetchall()
    # (cid, name, type, notnull, default, pk position)
    assert [row[1] for row in info] == list(table.column_names)
    assert [bool(row[3]) for row in info] == [not c.nullable for c in table.columns]
    assert [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]] == list(
        table.primary_key)


def test_schema_has_the_columns_the_issue_asks_for():
    assert set(TSC_CONFIGURATIONS.column_names) >= {
        'customer_id', 'tsc_id', 'frequency', 'cron_schedule', 'config', 'updated_at',
        'source_topic', 'source_partition', 'source_offset'}
    assert TSC_CONFIGURATIONS.primary_key == ('customer_id', 'tsc_id')
    assert set(PROCESSED_DATA.column_names) >= {
        'source_topic', 'source_partition', 'source_offset', 'customer_id', 'tsc_id',
        'operation', 'payload', 'processed_at'}
    assert PROCESSED_DATA.primary_key == ('source_topic', 'source_partition', 'source_offset')


def test_ddl_of_a_custom_table():
    table = Table('t', (Column('id', 'BIGINT'), Column('note', 'STRING', nullable=True)),
                  primary_key=('id',), hash_partitions=16)
    assert impala_ddl(table) == ('CREATE TABLE IF NOT EXISTS t (\n  id BIGINT NOT NULL,\n'
                                 '  note STRING,\n  PRIMARY KEY (id)\n)\n'
                                 'PARTITION BY HASH (id) PARTITIONS 16\nSTORED AS KUDU')
    assert sqlite_ddl(table) == ('CREATE TABLE IF NOT EXISTS t (\n  id INTEGER NOT NULL,\n'
                                 '  note TEXT,\n  PRIMARY KEY (id)\n)')


# --- Identifiers and URLs ---------------------------------------------------------------------

@pytest.mark.parametrize('name', ['a', '_', '_x1', 'Tsc_Configurations', 'db2', 'a' * 128])
def test_check_identifier_accepts(name):
    assert check_identifier(name) == name


@pytest.mark.parametrize('name', ['', '1abc', 'a-b', 'a b', 'a;drop', 'a.b', '`a`', '"a"',
                                  'a' * 129, 'é', 'abc\n', '\nabc', 'a\x00', None, 5, b'abc'])
def test_check_identifier_rejects(name):
    with pytest.raises(ValueError, match='not a valid table or database name'):
        check_identifier(name)


@pytest.mark.parametrize('url', [
    'sqlite:///orchestrator.db', 'sqlite:////tmp/x/orchestrator.db', 'sqlite:///a b/c.db',
    'impala://host:21050/db', 'impala://user@host/db?auth=LDAP&ssl=true', 'impala://h',
])
def test_check_warehouse_url_accepts(url):
    assert check_warehouse_url(url) == url


@pytest.mark.parametrize('url, fragment', [
    ('sqlite://', 'needs a path'),
    ('sqlite:///', 'needs a path'),
    ('sqlite://relative.db', 'needs a path'),
    ('', 'must be sqlite:///PATH or impala://'),
    ('orchestrator.db', 'must be sqlite:///PATH or impala://'),
    ('postgres://h/db', 'must be sqlite:///PATH or impala://'),
    ('impala://', 'impala URL must look like'),
    ('impala://u:pw@h/db', 'do not put a password'),
    ('impala://h/bad-db', 'not a valid table or database name'),
    ('impala://h/db?nope=1', 'unknown impala URL parameters'),
])
def test_check_warehouse_url_rejects(url, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        check_warehouse_url(url)


@pytest.mark.parametrize('url', ['mysql://admin:hunter2@h/db', 'impala://admin:hunter2@h/db'])
def test_check_warehouse_url_never_echoes_a_password(url):
    with pytest.raises(ValueError) as caught:
        check_warehouse_url(url)
    assert 'hunter2' not in str(caught.value)


@pytest.mark.parametrize('url, expected', [
    ('impala://u:secret@h:21050/db', 'impala://u:***@h:21050/db'),
    ('impala://:secret@h/db', 'impala://:***@h/db'),
    ('mysql://root:p%40ss@db.example/x?y=1', 'mysql://root:***@db.example/x?y=1'),
    ('impala://u@h/db', 'impala://u@h/db'),
    ('sqlite:///tmp/x.db', 'sqlite:///tmp/x.db'),
])
def test_describe_warehouse_hides_passwords(url, expected):
    assert describe_warehouse(url) == expected


@pytest.mark.parametrize('url, path', [
    ('sqlite:///x.db', 'x.db'), ('sqlite:////abs/x.db', '/abs/x.db'), ('sqlite://x', ''),
    ('impala://h', ''),
])
def test_sqlite_path(url, path):
    assert sqlite_path(url) == path


def test_open_warehouse_sqlite_creates_tables(tmp_path):
    path = tmp_path / 'sub' / 'w.db'
    writer = open_warehouse(f'sqlite:///{path}')
    try:
        assert isinstance(writer, SqliteWriter)
    finally:
        writer.close()
    tables = {row[0] for row in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {'tsc_configurations', 'processed_data'}


def test_open_warehouse_rejects_other_schemes():
    with pytest.raises(ValueError, match='unsupported warehouse'):
        open_warehouse('postgres://u:pw@h/db')


# --- SqliteWriter -----------------------------------------------------------------------------

def config_row(customer_id='c1', tsc_id='t1', *, offset=0, partition=0, topic='orders',
               frequency='daily', operation='create'):
    return {
        'customer_id': customer_id, 'tsc_id': tsc_id, 'frequency': frequency,
        'cron_schedule': '0 0 * * *', 'time_zone': None, 'enabled': True,
        'config': f'{{"frequency": "{frequency}"}}', 'operation': operation,
        'source_topic': topic, 'source_partition': partition, 'source_offset': offset,
        'updated_at': '2024-01-01 00:00:00.000000',
    }


def processed(offset, *, partition=0, topic='orders', payload='{}', processed_at='2024-01-01'):
    return {
        'source_topic': topic, 'source_partition': partition, 'source_offset': offset,
        'customer_id': 'c1', 'tsc_id': 't1', 'operation': 'create', 'payload': payload,
        'processed_at': processed_at,
    }


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / 'warehouse.db')


@pytest.fixture
def writer(db_path):
    opened = SqliteWriter(db_path)
    opened.create_tables()
    opened.create_tables()  # idempotent
    try:
        yield opened
    finally:
        opened.close()


def rows(db_path, sql):
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def configurations(db_path):
    return rows(db_path, 'SELECT customer_id, tsc_id, frequency, source_topic, source_partition, '
                         'source_offset FROM tsc_configurations ORDER BY customer_id, tsc_id')


def test_upsert_and_replay(writer, db_path):
    batch = [config_row('c1', 't1', offset=1), config_row('c1', 't2', offset=2, frequency='hourly')]

    writer.upsert_tsc_configurations(batch)
    first = rows(db_path, 'SELECT * FROM tsc_configurations ORDER BY tsc_id')
    writer.upsert_tsc_configurations(batch)

    assert rows(db_path, 'SELECT * FROM tsc_configurations ORDER BY tsc_id') == first
    assert configurations(db_path) == [('c1', 't1', 'daily', 'orders', 0, 1),
                                       ('c1', 't2', 'hourly', 'orders', 0, 2)]
    assert writer.statements_executed == 2
    assert writer.read_tsc_states([('c1', 't1'), ('c1', 't2'), ('c9', 't9')]) == {
        ('c1', 't1'): StoredState('orders', 0, 1, '{"frequency": "daily"}'),
        ('c1', 't2'): StoredState('orders', 0, 2, '{"frequency": "hourly"}'),
    }


def test_upsert_replaces_every_column(writer, db_path):
    writer.upsert_tsc_configurations([config_row(offset=1)])
    newer = config_row(offset=2, frequency='weekly', operation='update')
    newer.update(cron_schedule='0 0 * * 0', time_zone='Europe/Rome', enabled=False,
                 updated_at='2024-02-02 00:00:00.000000')

    writer.upsert_tsc_configurations([newer])

    (stored,) = rows(db_path, 'SELECT * FROM tsc_configurations')
    assert stored == tuple(newer[name] if name != 'enabled' else 0
                           for name in TSC_CONFIGURATIONS.column_names)


@pytest.mark.parametrize('later, overwrites', [
    (config_row(offset=5, frequency='hourly'), False),  # earlier offset, same partition
    (config_row(offset=10, frequency='hourly'), True),  # the same record again
    (config_row(offset=11, frequency='hourly'), True),  # later offset
    (config_row(offset=5, partition=1, frequency='hourly'), True),  # another partition
    (config_row(offset=5, topic='other', frequency='hourly'), True),  # another topic
])
def test_upsert_stale_guard(writer, db_path, later, overwrites):
    writer.upsert_tsc_configurations([config_row(offset=10)])

    writer.upsert_tsc_configurations([later])

    expected = (later if overwrites else config_row(offset=10))
    assert configurations(db_path) == [(
        'c1', 't1', expected['frequency'], expected['source_topic'],
        expected['source_partition'], expected['source_offset'])]


@pytest.mark.parametrize('delete, removes', [
    (config_row(offset=5, operation='delete'), False),
    (config_row(offset=10, operation='delete'), True),
    (config_row(offset=11, operation='delete'), True),
    (config_row(offset=0, partition=3, operation='delete'), True),
    (config_row(offset=0, topic='other', operation='delete'), True),
])
def test_delete_stale_guard(writer, db_path, delete, removes):
    writer.upsert_tsc_configurations([config_row(offset=10), config_row('c2', 't2', offset=3)])

    writer.delete_tsc_configurations([delete])

    remaining = [(row[0], row[1]) for row in configurations(db_path)]
    assert remaining == ([('c2', 't2')] if removes else [('c1', 't1'), ('c2', 't2')])


def test_delete_of_a_missing_key_is_a_no_op(writer, db_path):
    writer.upsert_tsc_configurations([config_row('c1', 't1')])
    writer.delete_tsc_configurations([config_row('c1', 'other', offset=9)])
    assert [row[:2] for row in configurations(db_path)] == [('c1', 't1')]


def test_hostile_ids_are_stored_verbatim(writer, db_path):
    hostile = "x'); DROP TABLE tsc_configurations; --"
    writer.upsert_tsc_configurations([config_row(hostile, '../..')])
    assert [row[:2] for row in configurations(db_path)] == [(hostile, '../..')]
    writer.delete_tsc_configurations([config_row(hostile, '../..', offset=1)])
    assert configurations(db_path) == []


def test_upsert_processed_data_is_idempotent(writer, db_path):
    batch = [processed(0), processed(1), processed(1, partition=1), processed(1, topic='b')]

    writer.upsert_processed_data(batch)
    writer.upsert_processed_data(batch)
    writer.upsert_processed_data([processed(0, payload='{"again": 1}', processed_at='2025')])

    assert rows(db_path, 'SELECT source_topic, source_partition, source_offset, payload, '
                         'processed_at FROM processed_data '
                         'ORDER BY source_topic, source_partition, source_offset') == [
        ('b', 0, 1, '{}', '2024-01-01'),
        ('orders', 0, 0, '{"again": 1}', '2025'),
        ('orders', 0, 1, '{}', '2024-01-01'),
        ('orders', 1, 1, '{}', '2024-01-01'),
    ]


@pytest.mark.parametrize('column', ['frequency', 'cron_schedule', 'config', 'updated_at'])
def test_not_null_violation_rejects_the_whole_batch(writer, db_path, column):
    bad = config_row('c1', 'bad')
    bad[column] = None

    with pytest.raises(RejectedRowsError, match='NOT NULL'):
        writer.upsert_tsc_configurations([config_row('c1', 'good'), bad])

    assert configurations(db_path) == []  # one transaction: nothing of the batch is kept
    writer.upsert_tsc_configurations([config_row('c1', 'good')])  # still usable afterwards
    assert len(configurations(db_path)) == 1


def test_not_null_violation_in_processed_data(writer):
    bad = processed(3)
    bad['payload'] = None
    with pytest.raises(RejectedRowsError):
        writer.upsert_processed_data([bad])


def test_locked_database_is_transient(writer, db_path):
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute('BEGIN IMMEDIATE')
    impatient = SqliteWriter(db_path, busy_timeout_seconds=0.01, attempts=2)
    try:
        with pytest.raises(TransientWarehouseError, match='busy'):
            impatient.upsert_processed_data([processed(0)])
    finally:
        blocker.execute('ROLLBACK')
        blocker.close()
    impatient.upsert_processed_data([processed(0)])
    impatient.close()
    assert len(rows(db_path, 'SELECT * FROM processed_data')) == 1


def test_two_writers_in_two_threads_lose_no_rows(db_path):
    start = threading.Barrier(2)
    errors = []

    def work(topic):
        try:
            own = SqliteWriter(db_path)
            try:
                own.create_tables()
                start.wait(timeout=30)
                for first in range(0, 500, 10):
                    own.upsert_processed_data(
                        [processed(offset, topic=topic) for offset in range(first, first + 10)])
                    own.upsert_tsc_configurations([config_row(topic, str(first), offset=first)])
            finally:
                own.close()
        except Exception as e:  # reported below, on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(topic,)) for topic in ('left', 'right')]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert rows(db_path, 'SELECT source_topic, COUNT(DISTINCT source_offset) FROM processed_data '
                         'GROUP BY source_topic ORDER BY source_topic') == [('left', 500),
                                                                            ('right', 500)]
    assert rows(db_path, 'SELECT COUNT(*) FROM tsc_configurations') == [(100,)]
