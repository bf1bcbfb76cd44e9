"""ImpalaWriter and RoutedWarehouse over impyla's real HiveServer2 client and testing.hs2_server.

The server is Impala-flavoured HS2 on loopback backed by a SQLite file: the client, the Thrift
wire, sessions, errors and reconnects are real; only the SQL engine behind it stands in.
Rows are read back both through the server's SQLite file and through a plain impyla cursor.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from impala.dbapi import connect

from testing.hs2_server import HS2Server
from transforms.impala_module import save_to_impala, upsert_tsc_configuration, write_isolating
from transforms.impala_writer import ImpalaWriter, RoutedWarehouse, UnknownClusterError
from transforms.records import Message, SourceRecord
from transforms.warehouse import (
    PROCESSED_DATA,
    TSC_CONFIGURATIONS,
    RejectedRowsError,
    StoredState,
    TransientWarehouseError,
    WarehouseError,
    impala_ddl,
    open_warehouse,
)

pytestmark = pytest.mark.integration

DATABASE = 'tsc'
UPDATED_AT = '2026-01-02 03:04:05.123456'

HOSTILE = [
    "'", '"', '\\', "\\'", "''", "\\\\'\\", '%', '%s %d %(x)s %%', '?', '??', ':name',
    ':1 :00 12:30', '\n', '\r\n', '\r', '\t', '\0', 'a\0b\x01\x1a\x7f\b', '',
    '😀 emoji \U0001f600 non-BMP', 'ünïcödé 中文', 'x' * 200_000,
    "it's a \"mix\" of \\n not-newline, '' and \\' and 100% ? :x",
    "x'; DROP TABLE tsc_configurations; --",
]


# ---------------------------------------------------------------------------- fixtures / helpers

@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    """Starts HS2 servers on demand (each on its own SQLite file) and always stops them."""
    started: list[HS2Server] = []

    def start(name: str = 'hs2', **kwargs: Any) -> HS2Server:
        kwargs.setdefault('databases', [DATABASE])
        server = HS2Server(tmp_path / f'{name}.db', **kwargs)
        server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def server(servers) -> HS2Server:
    return servers()


@pytest.fixture
def writers() -> Iterator[Any]:
    """Builds writers (fast backoff) and always closes them."""
    made: list[Any] = []

    def make(server: HS2Server, *, query: str = '', user: str = '', create: bool = True,
             **kwargs: Any) -> ImpalaWriter:
        kwargs.setdefault('backoff_seconds', 0.01)
        url = f'impala://{user}{"@" if user else ""}127.0.0.1:{server.port}/{DATABASE}{query}'
        writer = ImpalaWriter.from_url(url, **kwargs)
        made.append(writer)
        if create:
            writer.create_tables()
        return writer

    try:
        yield make
    finally:
        for writer in made:
            writer.close()


def config_row(customer: str, tsc: str, *, offset: int = 1, topic: str = 'orchestrator',
               partition: int = 0, config: dict | None = None, **overrides: Any) -> dict:
    row = {
        'customer_id': customer, 'tsc_id': tsc, 'frequency': 'hourly',
        'cron_schedule': '0 * * * *', 'time_zone': None, 'enabled': True,
        'config': json.dumps(config if config is not None else {'customerId': customer},
                             ensure_ascii=False, sort_keys=True),
        'operation': 'create', 'source_topic': topic, 'source_partition': partition,
        'source_offset': offset, 'updated_at': UPDATED_AT,
    }
    row.update(overrides)
    return row


def processed(offset: int, payload: str = 'p', *, topic: str = 'orchestrator',
              partition: int = 0, customer: str = 'c', tsc: str = 't') -> dict:
    return {'source_topic': topic, 'source_partition': partition, 'source_offset': offset,
            'customer_id': customer, 'tsc_id': tsc, 'operation': 'create', 'payload': payload,
            'processed_at': UPDATED_AT}


def message(customer: str, tsc: str, offset: int, *, operation: str = 'create',
            config: dict | None = None, topic: str = 'orchestrator',
            partition: int = 0) -> Message:
    text = json.dumps({'operation': operation, 'customerId': customer, 'tscId': tsc},
                      ensure_ascii=False)
    cfg = None if operation == 'delete' else {
        'customerId': customer, 'tscId': tsc, 'frequency': 'hourly', **(config or {})}
    return Message(source=SourceRecord(text.encode(), None, topic, partition, offset),
                   operation=operation, customer_id=customer, tsc_id=tsc, payload={}, text=text,
                   config=cfg, cron_schedule=None if cfg is None else '0 * * * *')


def stored(server: HS2Server, table: str) -> list[dict]:
    """Every row of ``table`` in the server's SQLite file (text decoded as UTF-8, NUL kept)."""
    database = sqlite3.connect(server.database_path)
    database.text_factory = bytes
    try:
        cursor = database.execute(f'SELECT * FROM {table}')  # noqa: S608 - fixed names
        names = [d[0] for d in cursor.description]
        return [{n: v.decode('utf-8') if isinstance(v, bytes) else v
                 for n, v in zip(names, row, strict=True)} for row in cursor.fetchall()]
    finally:
        database.close()


def normalized(row: dict) -> dict:
    """A written row as SQLite holds it: BOOLEAN as 0/1, TIMESTAMP as text."""
    return {k: int(v) if isinstance(v, bool) else v for k, v in row.items()}


def keyed(rows: list[dict], *key: str) -> dict:
    return {tuple(r[k] for k in key): r for r in rows}


def config_rows(server: HS2Server) -> dict:
    return keyed(stored(server, 'tsc_configurations'), 'customer_id', 'tsc_id')


def write_statements(server: HS2Server, *, success: bool | None = True) -> list[str]:
    return [s.statement for s in server.statements
            if s.statement.lstrip().upper().startswith(('UPSERT', 'DELETE'))
            and (success is None or s.success == success)]


@contextlib.contextmanager
def impyla_cursor(server: HS2Server, **kwargs: Any) -> Iterator[Any]:
    connection = connect(host='127.0.0.1', port=server.port, database=DATABASE,
                         auth_mechanism='NOSASL', timeout=20, **kwargs)
    try:
        cursor = connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
    finally:
        connection.close()


# ---------------------------------------------------------------------------- DDL

def test_create_tables_sends_kudu_ddl(server, writers):
    writer = writers(server)
    writer.create_tables()  # IF NOT EXISTS: a second run is harmless
    ddl = [s for s in server.statements if s.statement.startswith('CREATE TABLE')]
    assert [s.statement for s in ddl] == [impala_ddl(t, DATABASE) for t in
                                          (TSC_CONFIGURATIONS, PROCESSED_DATA)] * 2
    assert all(s.success for s in ddl)
    for statement in (s.statement for s in ddl):
        assert 'STORED AS KUDU' in statement and 'PARTITION BY HASH' in statement
    assert stored(server, 'tsc_configurations') == stored(server, 'processed_data') == []
    database = sqlite3.connect(server.database_path)
    columns = [r[1] for r in database.execute('PRAGMA table_info(tsc_configurations)')]
    keys = [r[1] for r in sorted(database.execute('PRAGMA table_info(tsc_configurations)'),
                                 key=lambda r: r[5]) if r[5]]
    database.close()
    assert columns == list(TSC_CONFIGURATIONS.column_names)
    assert keys == list(TSC_CONFIGURATIONS.primary_key)


# ---------------------------------------------------------------------------- writes

def test_upsert_update_delete_and_replay_tsc_configurations(server, writers):
    writer = writers(server)
    rows = [config_row('acme', 'nightly', offset=1), config_row('acme', 'sync', offset=2),
            config_row('globex', 'weekly', offset=3, time_zone='Europe/Rome', enabled=False)]
    writer.upsert_tsc_configurations(rows)
    writer.upsert_tsc_configurations(rows)  # replay: idempotent
    assert config_rows(server) == {(r['customer_id'], r['tsc_id']): normalized(r) for r in rows}

    update = config_row('acme', 'sync', offset=7, frequency='daily', cron_schedule='0 0 * * *')
    writer.upsert_tsc_configurations([update])
    assert config_rows(server)[('acme', 'sync')] == normalized(update)
    assert len(config_rows(server)) == 3

    delete = config_row('acme', 'nightly', offset=8, operation='delete')
    writer.delete_tsc_configurations([delete])
    writer.delete_tsc_configurations([delete])  # replay of a delete: nothing left to delete
    assert set(config_rows(server)) == {('acme', 'sync'), ('globex', 'weekly')}
    assert writer.statements_executed == 2 + 2 + 1 + 2  # DDL, upserts, update, deletes


def test_delete_stale_guard(server, writers):
    writer = writers(server)
    writer.upsert_tsc_configurations([
        config_row('a', '1', offset=10), config_row('a', '2', offset=10),
        config_row('a', '3', offset=10), config_row('a', '4', offset=10, topic='other')])
    writer.delete_tsc_configurations([
        config_row('a', '1', offset=5),                 # older offset, same partition: kept
        config_row('a', '2', offset=11),                # newer: deleted
        config_row('a', '3', offset=5, partition=1),    # another partition: no order, deleted
        config_row('a', '4', offset=5),                 # another topic: deleted
        config_row('a', 'missing', offset=5),           # nothing to delete
    ])
    assert set(config_rows(server)) == {('a', '1')}
    assert len(write_statements(server)) == 2  # one UPSERT, one batched DELETE


def test_upsert_and_replay_processed_data(server, writers):
    writer = writers(server)
    rows = [processed(i, f'payload {i}', partition=i % 2) for i in range(20)]
    writer.upsert_processed_data(rows)
    writer.upsert_processed_data(rows[5:15])  # replay of a part
    got = keyed(stored(server, 'processed_data'), 'source_topic', 'source_partition',
                'source_offset')
    assert got == {('orchestrator', r['source_partition'], r['source_offset']): r for r in rows}
    assert len(write_statements(server)) == 2


def test_hostile_values_round_trip(server, writers):
    writer = writers(server, max_rows_per_statement=7)
    config_rows_written = [
        config_row(value, f't{i}', offset=i, config={'v': value, 'customerId': value},
                   frequency=value, cron_schedule=value, time_zone=value, operation=value,
                   source_topic=value)
        for i, value in enumerate(HOSTILE)]
    processed_written = [processed(i, value, topic=value, customer=value, tsc=value)
                         for i, value in enumerate(HOSTILE)]
    writer.upsert_tsc_configurations(config_rows_written)
    writer.upsert_processed_data(processed_written)

    assert config_rows(server) == {(r['customer_id'], r['tsc_id']): normalized(r)
                                   for r in config_rows_written}
    assert keyed(stored(server, 'processed_data'), 'source_offset') == {
        (r['source_offset'],): r for r in processed_written}

    # Through the wire, too: a plain impyla cursor reads back what was written.
    with impyla_cursor(server) as cursor:
        cursor.execute('SELECT customer_id, tsc_id, frequency, cron_schedule, time_zone, '
                       'enabled, config, operation, source_topic, source_partition, '
                       'source_offset FROM tsc_configurations')
        assert sorted(cursor.fetchall(), key=lambda r: r[10]) == [
            tuple(r[c] for c in TSC_CONFIGURATIONS.column_names[:-1])
            for r in config_rows_written]
        cursor.execute('SELECT source_offset, payload FROM processed_data')
        assert sorted(cursor.fetchall()) == [(i, v) for i, v in enumerate(HOSTILE)]

    # The writer's own read path decodes every key and config.
    states = writer.read_tsc_states([(v, f't{i}') for i, v in enumerate(HOSTILE)])
    assert states == {(r['customer_id'], r['tsc_id']): StoredState(
        r['source_topic'], r['source_partition'], r['source_offset'], r['config'])
        for r in config_rows_written}

    # Deleting by hostile keys matches exactly those keys.
    writer.delete_tsc_configurations([config_row(v, f't{i}', offset=10_000)
                                      for i, v in enumerate(HOSTILE) if i % 2 == 0])
    assert set(config_rows(server)) == {(v, f't{i}') for i, v in enumerate(HOSTILE) if i % 2}


def test_read_tsc_states(server, writers):
    writer = writers(server, max_rows_per_statement=3)
    rows = [config_row('c', str(i), offset=100 + i, partition=i % 3, topic=f'topic{i % 2}')
            for i in range(10)]
    writer.upsert_tsc_configurations(rows)
    keys = [('c', str(i)) for i in range(12)] + [('nobody', '0')]
    states = writer.read_tsc_states(keys)
    assert states == {('c', str(i)): StoredState(f'topic{i % 2}', i % 3, 100 + i, rows[i]['config'])
                      for i in range(10)}
    assert all(isinstance(s.source_offset, int) and isinstance(s.source_partition, int)
               for s in states.values())
    assert writer.read_tsc_states([]) == {}
    selects = [s for s in server.statements if s.statement.startswith('SELECT')]
    assert len(selects) == 5  # 13 keys, 3 per statement


# ---------------------------------------------------------------------------- bounds

def test_rows_per_statement_bound(server, writers):
    writer = writers(server, max_rows_per_statement=50)
    rows = [config_row('c', f'{i:04d}', offset=i) for i in range(500)]
    server.clear_statements()
    writer.upsert_tsc_configurations(rows)
    upserts = write_statements(server)
    assert len(upserts) == 10
    assert all(s.count('), (') == 49 for s in upserts)
    assert len(config_rows(server)) == 500

    server.clear_statements()
    writer.upsert_processed_data([processed(i) for i in range(500)])
    assert len(write_statements(server)) == 10
    server.clear_statements()
    writer.delete_tsc_configurations([config_row('c', f'{i:04d}', offset=10_000)
                                      for i in range(120)])
    assert len(write_statements(server)) == 3
    assert len(config_rows(server)) == 380


def test_statement_bytes_bound(server, writers):
    bound = 2048
    writer = writers(server, max_statement_bytes=bound)
    sizes = [5, 300, 17, 500, 64, 1, 450, 120, 580, 33] * 8
    rows = [config_row(f'cust-{i}-' + 'é' * (n // 3), f'tsc-😀-{i}', offset=i,
                       config={'pad': 'ü' * n})
            for i, n in enumerate(sizes)]
    server.clear_statements()
    writer.upsert_tsc_configurations(rows)
    writer.upsert_processed_data([processed(i, 'ß' * n) for i, n in enumerate(sizes)])
    writer.read_tsc_states([(r['customer_id'], r['tsc_id']) for r in rows])
    writer.delete_tsc_configurations([config_row(r['customer_id'], r['tsc_id'], offset=10_000)
                                      for r in rows[::2]])
    statements = [s.statement for s in server.statements if not s.statement.startswith('USE')]
    assert len(statements) > 20
    assert max(len(s.encode('utf-8')) for s in statements) <= bound
    assert all(s.success for s in server.statements)
    assert len(config_rows(server)) == len(rows) // 2
    assert len(stored(server, 'processed_data')) == len(rows)


def test_row_too_large_for_a_statement_is_isolated(server, writers):
    writer = writers(server, max_statement_bytes=4096)
    rows = [processed(i, 'x' * (10_000 if i == 3 else 10)) for i in range(8)]
    failed = write_isolating(writer.upsert_processed_data, rows, lambda r: r)
    assert [(row['source_offset'], type(error)) for row, error in failed] == [
        (3, RejectedRowsError)]
    assert 'does not fit' in str(failed[0][1])
    assert sorted(r['source_offset'] for r in stored(server, 'processed_data')) == [
        0, 1, 2, 4, 5, 6, 7]


# ---------------------------------------------------------------------------- faults

@pytest.mark.parametrize('execute_first', [False, True], ids=['lost-before', 'lost-after-commit'])
def test_reconnects_after_dropped_connection(server, writers, execute_first):
    writer = writers(server)
    rows = [config_row('c', str(i), offset=i) for i in range(30)]
    server.clear_statements()
    # The writer's session is open already (create_tables), so the UPSERT is the next statement.
    server.drop_after_statements(0, execute=execute_first)
    writer.upsert_tsc_configurations(rows)
    assert server.stats['connections_dropped'] == 1
    upserts = write_statements(server, success=None)
    assert len(upserts) == 2 + (1 if execute_first else 0)  # dropped (maybe run), then retried
    assert len({s.connection_id for s in server.statements}) == 2
    assert config_rows(server) == {('c', str(i)): normalized(r) for i, r in enumerate(rows)}

    # Archive rows too: nothing lost, nothing written twice.
    server.drop_after_statements(0, execute=execute_first)
    writer.upsert_processed_data([processed(i) for i in range(30)])
    assert sorted(r['source_offset'] for r in stored(server, 'processed_data')) == list(range(30))


def test_reconnects_after_idle_session_expired(server, writers):
    writer = writers(server)
    connection = writer._connection
    assert server.expire_sessions() == 1  # the writer holds one session between statements
    writer.upsert_tsc_configurations([config_row('c', 't', offset=1)])
    refused = [s for s in server.statements if s.error and 'session expired' in s.error]
    assert len(refused) == 1
    assert config_rows(server) == {('c', 't'): normalized(config_row('c', 't', offset=1))}
    assert writer._connection is not connection  # reconnected


def test_reconnects_after_session_expired_while_running(server, writers):
    writer = writers(server)
    connection = writer._connection
    cursor = writer._cursor
    wait = cursor._wait_to_finish
    expired = []

    def expire_then_wait():
        # The statement has run; its session expires before the client asks how it went.
        if not expired:
            expired.append(server.expire_sessions())
        return wait()

    cursor._wait_to_finish = expire_then_wait
    writer.upsert_processed_data([processed(i) for i in range(5)])
    assert expired == [1]
    assert len(write_statements(server)) == 2  # ran, lost its answer, ran again on a new session
    assert sorted(r['source_offset'] for r in stored(server, 'processed_data')) == list(range(5))
    assert writer._connection is not connection


def test_one_session_serves_every_statement(server, writers):
    writer = writers(server)
    before = server.stats['sessions_opened']
    for offset in range(1, 6):
        writer.upsert_tsc_configurations([config_row('c', 't', offset=offset)])
    assert server.stats['sessions_opened'] == before
    assert config_rows(server)[('c', 't')]['source_offset'] == 5


POISON = 'poison-7f3a'


@pytest.mark.parametrize('phase', ['execute', 'status'])
def test_failing_row_is_isolated_by_write_isolating(server, writers, phase):
    writer = writers(server)
    rows = [config_row(POISON if i == 6 else f'c{i}', 't', offset=i) for i in range(13)]
    # Matches the poison row's VALUES tuple only: never the SELECT, never other rows.
    server.fail_statements(re.escape(f"('{POISON}', "), phase=phase,
                           message='Kudu error(s) reported, first error: Invalid argument')
    failed = write_isolating(writer.upsert_tsc_configurations, rows, lambda r: r)
    assert [row['customer_id'] for row, _ in failed] == [POISON]
    assert isinstance(failed[0][1], RejectedRowsError)
    assert set(config_rows(server)) == {(f'c{i}', 't') for i in range(13) if i != 6}


@pytest.mark.parametrize('phase', ['execute', 'status'])
def test_failing_row_is_isolated_by_upsert_tsc_configuration(server, writers, phase):
    writer = writers(server)
    writer.upsert_tsc_configurations([config_row('gone', 't', offset=1)])
    batch = [message(f'c{i}', 't', i) for i in range(10)]
    batch[4] = message(POISON, 't', 4)
    batch.append(message('gone', 't', 20, operation='delete'))
    server.fail_statements(re.escape(f"('{POISON}', "), phase=phase)
    done, failures = upsert_tsc_configuration(writer, batch, delete_operations={'delete'},
                                              updated_at=UPDATED_AT)
    assert [(m.customer_id, type(e)) for m, e in failures] == [(POISON, RejectedRowsError)]
    assert sorted(m.customer_id for m in done) == sorted(
        [f'c{i}' for i in range(10) if i != 4] + ['gone'])
    assert not any(m.superseded for m in done)
    assert set(config_rows(server)) == {(f'c{i}', 't') for i in range(10) if i != 4}

    # Archive stage: the same isolation at stage archive.
    server.fail_statements(re.escape(f"'{POISON}', 't', 'create'"), phase=phase)
    rows, failed = save_to_impala(writer, batch, processed_at=UPDATED_AT)
    assert [m.customer_id for m, _ in failed] == [POISON]
    assert len(rows) == len(batch) - 1
    assert {r['customer_id'] for r in stored(server, 'processed_data')} == {
        m.customer_id for m in batch} - {POISON}


def test_transient_fault_retried_within_attempts(server, writers):
    writer = writers(server, attempts=4)
    server.fail_statements('^UPSERT', times=3, message='Service unavailable: try again')
    writer.upsert_tsc_configurations([config_row('c', 't')])
    assert len(write_statements(server, success=False)) == 3
    assert len(write_statements(server)) == 1
    assert set(config_rows(server)) == {('c', 't')}


@pytest.mark.parametrize('phase', ['execute', 'status'])
def test_transient_fault_that_outlasts_the_attempts(server, writers, phase):
    writer = writers(server, attempts=3)
    server.fail_statements('^UPSERT', message='Service unavailable: impalad busy', phase=phase)
    with pytest.raises(TransientWarehouseError, match='unavailable'):
        writer.upsert_tsc_configurations([config_row('c', 't')])
    assert len(write_statements(server, success=False)) == 3

    # Through write_isolating: a transient failure is not split, every row comes back.
    rows = [config_row('c', str(i)) for i in range(8)]
    server.clear_statements()
    failed = write_isolating(writer.upsert_tsc_configurations, rows, lambda r: r)
    assert [row for row, _ in failed] == rows
    assert all(isinstance(error, TransientWarehouseError) for _, error in failed)
    assert len(write_statements(server, success=False)) == 3  # no splitting
    assert config_rows(server) == {}

    server.clear_faults()
    assert write_isolating(writer.upsert_tsc_configurations, rows, lambda r: r) == []
    assert len(config_rows(server)) == 8


def test_refused_connections(server, writers):
    writer = writers(server, create=False, attempts=2)
    server.refuse_connections(None)
    with pytest.raises(TransientWarehouseError):
        writer.upsert_processed_data([processed(1)])
    server.clear_faults()
    writer.create_tables()
    writer.upsert_processed_data([processed(1)])
    assert len(stored(server, 'processed_data')) == 1


def test_rejected_statement_is_not_retried(server, writers):
    writer = writers(server, attempts=4)
    with pytest.raises(RejectedRowsError, match='AnalysisException'):
        writer.execute('SELECT nope FROM no_such_table')
    assert len([s for s in server.statements if 'no_such_table' in s.statement]) == 1


# ---------------------------------------------------------------------------- PLAIN auth

PASSWORD = 'pw-S3cr3t-%?:x'
WRONG = 'wr0ng-S3cr3t'


def _no_secret_anywhere(caplog, error: BaseException | None, *secrets: str) -> None:
    texts = []
    while error is not None:
        texts += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    for secret in secrets:
        assert not any(secret in text for text in texts), secret


def test_plain_auth_with_password_file(servers, writers, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    server = servers(users={'etl': PASSWORD})
    secret = tmp_path / 'impala-password'
    secret.write_text(PASSWORD + '\n', encoding='utf-8')
    monkeypatch.delenv('IMPALA_PASSWORD', raising=False)
    monkeypatch.setenv('IMPALA_PASSWORD_FILE', str(secret))
    writer = writers(server, user='etl', query='?auth=PLAIN')
    writer.upsert_tsc_configurations([config_row('c', 't')])
    assert set(config_rows(server)) == {('c', 't')}
    assert server.stats.get('connections_auth_failed', 0) == 0

    wrong = tmp_path / 'wrong-password'
    wrong.write_text(WRONG, encoding='utf-8')
    monkeypatch.setenv('IMPALA_PASSWORD_FILE', str(wrong))
    bad = writers(server, user='etl', query='?auth=PLAIN', create=False, attempts=2)
    with pytest.raises(WarehouseError) as caught:
        bad.upsert_tsc_configurations([config_row('c', 'other')])
    assert not isinstance(caught.value, RejectedRowsError)  # not split row by row
    assert server.stats['connections_auth_failed'] >= 1
    assert set(config_rows(server)) == {('c', 't')}
    _no_secret_anywhere(caplog, caught.value, PASSWORD, WRONG)

    # No password at all: refused too (impyla would otherwise send its default).
    monkeypatch.delenv('IMPALA_PASSWORD_FILE')
    with pytest.raises(ValueError, match='needs a password') as refused:
        writers(server, user='etl', query='?auth=PLAIN', create=False, attempts=1)
    _no_secret_anywhere(caplog, refused.value, PASSWORD, WRONG)


def test_plain_auth_with_password_env(servers, writers, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    server = servers(users={'etl': PASSWORD})
    monkeypatch.delenv('IMPALA_PASSWORD_FILE', raising=False)
    monkeypatch.setenv('IMPALA_PASSWORD', PASSWORD)
    writer = writers(server, user='etl', query='?auth=PLAIN')
    writer.upsert_processed_data([processed(1)])
    assert len(stored(server, 'processed_data')) == 1
    _no_secret_anywhere(caplog, None, PASSWORD)


# ---------------------------------------------------------------------------- routing

@pytest.fixture
def routed(servers, tmp_path, monkeypatch) -> Iterator[tuple[RoutedWarehouse, HS2Server,
                                                             HS2Server]]:
    main = servers('main')
    eu = servers('eu', users={'etl': PASSWORD})
    secret = tmp_path / 'eu-password'
    secret.write_text(PASSWORD, encoding='utf-8')
    monkeypatch.delenv('IMPALA_PASSWORD', raising=False)
    monkeypatch.delenv('IMPALA_PASSWORD_FILE', raising=False)
    clusters = tmp_path / 'clusters.yaml'
    clusters.write_text(
        'default: main\n'
        'clusters:\n'
        f'  main: impala://127.0.0.1:{main.port}/{DATABASE}\n'
        '  eu:\n'
        f'    url: impala://etl@127.0.0.1:{eu.port}/{DATABASE}?auth=PLAIN\n'
        f'    password_file: {secret}\n', encoding='utf-8')
    warehouse = open_warehouse('impala://unused:1/x', impala_clusters=str(clusters),
                               backoff_seconds=0.01, max_rows_per_statement=100)
    assert isinstance(warehouse, RoutedWarehouse)
    try:
        warehouse.create_tables()
        yield warehouse, main, eu
    finally:
        warehouse.close()


def test_routed_warehouse(routed):
    warehouse, main, eu = routed
    batch = [
        message('acme', 'eu-1', 1, config={'impalaCluster': 'eu'}),
        message('acme', 'default-1', 2),
        message('acme', 'main-1', 3, config={'impalaCluster': 'main'}),
        message('acme', 'mars-1', 4, config={'impalaCluster': 'mars'}),
        message('acme', 'eu-2', 5, config={'impalaCluster': 'eu'}),
    ]
    done, failures = upsert_tsc_configuration(warehouse, batch, delete_operations={'delete'},
                                              updated_at=UPDATED_AT)
    assert [(m.tsc_id, type(e)) for m, e in failures] == [('mars-1', UnknownClusterError)]
    assert "'mars'" in str(failures[0][1])
    assert sorted(m.tsc_id for m in done) == ['default-1', 'eu-1', 'eu-2', 'main-1']
    assert set(config_rows(eu)) == {('acme', 'eu-1'), ('acme', 'eu-2')}
    assert set(config_rows(main)) == {('acme', 'default-1'), ('acme', 'main-1')}
    assert json.loads(config_rows(eu)[('acme', 'eu-1')]['config'])['impalaCluster'] == 'eu'

    # Reads merge both clusters; a delete reaches both and removes the key where it lives.
    assert set(warehouse.read_tsc_states([('acme', t) for t in
                                          ('eu-1', 'eu-2', 'default-1', 'main-1', 'mars-1')])) \
        == {('acme', t) for t in ('eu-1', 'eu-2', 'default-1', 'main-1')}
    deletes = [message('acme', 'eu-1', 10, operation='delete'),
               message('acme', 'default-1', 11, operation='delete')]
    done, failures = upsert_tsc_configuration(warehouse, deletes, delete_operations={'delete'},
                                              updated_at=UPDATED_AT)
    assert failures == [] and len(done) == 2
    assert deletes[0].config['impalaCluster'] == 'eu'  # the stored config came along
    assert len([s for s in write_statements(eu) if s.startswith('DELETE')]) == 1
    assert len([s for s in write_statements(main) if s.startswith('DELETE')]) == 1
    assert set(config_rows(eu)) == {('acme', 'eu-2')}
    assert set(config_rows(main)) == {('acme', 'main-1')}

    # processed_data is the archive of the whole stream: the default cluster only.
    rows, failed = save_to_impala(warehouse, batch + deletes, processed_at=UPDATED_AT)
    assert failed == [] and len(rows) == 7
    assert len(stored(main, 'processed_data')) == 7
    assert stored(eu, 'processed_data') == []
    assert not any('processed_data' in s for s in write_statements(eu, success=None))
    assert warehouse.statements_executed == len([
        s for srv in (main, eu) for s in srv.statements
        if s.success and not s.statement.startswith('USE')])


def test_routed_warehouse_unknown_cluster_alone_in_a_batch(routed):
    warehouse, main, eu = routed
    failed = write_isolating(
        warehouse.upsert_tsc_configurations,
        [config_row('a', str(i), config={'impalaCluster': 'mars' if i == 2 else 'eu'})
         for i in range(5)], lambda r: r)
    assert [(row['tsc_id'], type(error)) for row, error in failed] == [
        ('2', UnknownClusterError)]
    assert set(config_rows(eu)) == {('a', '0'), ('a', '1'), ('a', '3'), ('a', '4')}
    assert config_rows(main) == {}


def test_routed_warehouse_one_cluster_down(routed):
    warehouse, main, eu = routed
    eu.refuse_connections(None)
    warehouse.close()  # drop the open connections so the next write must reconnect
    started = time.monotonic()
    failed = write_isolating(
        warehouse.upsert_tsc_configurations,
        [config_row('a', '1', config={'impalaCluster': 'eu'}), config_row('a', '2')],
        lambda r: r)
    assert time.monotonic() - started < 30
    # The whole call failed transiently: every row comes back for a retry or a dead letter.
    assert {row['tsc_id'] for row, _ in failed} == {'1', '2'}
    assert all(isinstance(e, TransientWarehouseError) for _, e in failed)
    assert config_rows(eu) == {}
