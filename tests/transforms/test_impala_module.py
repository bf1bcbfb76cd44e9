"""Tests for transforms.impala_module: isolating writes, upserts, archiving, their transforms."""

from __future__ import annotations

import json
import sqlite3

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.dead_letters import (
    HEADER_ERROR_CLASS,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_STAGE,
)
from transforms.impala_module import (
    ArchiveMessages,
    UpsertTscConfigurations,
    configuration_row,
    processed_row,
    save_to_impala,
    upsert_tsc_configuration,
    write_isolating,
)
from transforms.records import Message, SourceRecord
from transforms.warehouse import (
    PROCESSED_DATA,
    TSC_CONFIGURATIONS,
    RejectedRowsError,
    SqliteWriter,
    TransientWarehouseError,
)

DELETES = ('delete',)
CRON = {'daily': '0 0 * * *', 'hourly': '0 * * * *', 'weekly': '0 0 * * 0'}


def message(offset: int, operation: str = 'create', customer_id: str = 'c1',
            tsc_id: str = 't1', *, partition: int = 0, topic: str = 'orders',
            frequency: str | None = 'daily', **config_fields) -> Message:
    """An enriched message: create/update carry a config, delete carries none."""
    text = json.dumps({'operation': operation, 'customerId': customer_id, 'tscId': tsc_id,
                       'n': offset})
    source = SourceRecord(value=text.encode(), key=f'{customer_id}/{tsc_id}'.encode(),
                          topic=topic, partition=partition, offset=offset)
    result = Message(source=source, operation=operation, customer_id=customer_id,
                     tsc_id=tsc_id, payload=json.loads(text), text=text)
    if operation != 'delete':
        result.config = {'customerId': customer_id, 'tscId': tsc_id, 'enabled': True,
                         **config_fields}
        if frequency is not None:
            result.config['frequency'] = frequency
        result.cron_schedule = CRON.get(frequency)
    return result


def query(path, sql):
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def stored_configurations(path):
    return query(path, 'SELECT customer_id, tsc_id, frequency, cron_schedule, operation, '
                       'source_partition, source_offset FROM tsc_configurations '
                       'ORDER BY customer_id, tsc_id')


def stored_archive(path):
    return query(path, 'SELECT source_topic, source_partition, source_offset, customer_id, '
                       'tsc_id, operation, payload FROM processed_data '
                       'ORDER BY source_topic, source_partition, source_offset')


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / 'warehouse.db')


@pytest.fixture
def writer(db_path):
    opened = SqliteWriter(db_path)
    opened.create_tables()
    try:
        yield opened
    finally:
        opened.close()


# --- write_isolating ---------------------------------------------------------------------------

class FakeWrite:
    """Rejects any call whose rows include a bad one; optionally fails some calls transiently."""

    def __init__(self, bad=(), transient=()):
        self.bad = {f'row-{i}' for i in bad}
        self.transient = {f'row-{i}' for i in transient}
        self.calls: list[list[str]] = []
        self.written: list[str] = []

    def __call__(self, rows):
        self.calls.append(list(rows))
        if self.bad & set(rows):
            raise RejectedRowsError(f'rejected {sorted(self.bad & set(rows))}')
        if self.transient & set(rows):
            raise TransientWarehouseError('connection lost')
        self.written.extend(rows)


@pytest.mark.parametrize('count, bad, calls', [
    (0, (), 0),
    (1, (), 1),
    (8, (), 1),
    (1, (0,), 1),
    (8, (3,), 7),   # 8 → 4 → 2 → 1: one failed call per level plus the good halves
    (8, (0,), 7),
    (8, (7,), 7),
    (8, (1, 6), 11),
    (8, tuple(range(8)), 15),
    (5, (4,), 7),   # 5 → 2+3 → 1+2 → 1+1
    (1000, (999,), 21),
])
def test_write_isolating_isolates_exactly_the_bad_rows(count, bad, calls):
    write = FakeWrite(bad)
    items = list(range(count))

    failed = write_isolating(write, items, lambda i: f'row-{i}')

    assert [item for item, _ in failed] == sorted(bad)
    assert all(isinstance(error, RejectedRowsError) for _, error in failed)
    # Every good row is written exactly once, none of the bad ones.
    assert sorted(write.written) == sorted(f'row-{i}' for i in items if i not in bad)
    assert len(write.calls) == calls


def test_write_isolating_transient_error_fails_the_whole_group():
    write = FakeWrite(transient=(5,))

    failed = write_isolating(write, list(range(8)), lambda i: f'row-{i}')

    assert [item for item, _ in failed] == list(range(8))
    assert all(isinstance(error, TransientWarehouseError) for _, error in failed)
    assert len(write.calls) == 1
    assert write.written == []


def test_write_isolating_transient_error_after_a_split_fails_that_half():
    write = FakeWrite(bad=(1,), transient=(5,))

    failed = write_isolating(write, list(range(8)), lambda i: f'row-{i}')

    assert {item: type(error) for item, error in failed} == {
        1: RejectedRowsError, 4: TransientWarehouseError, 5: TransientWarehouseError,
        6: TransientWarehouseError, 7: TransientWarehouseError}
    assert sorted(write.written) == ['row-0', 'row-2', 'row-3']


def test_write_isolating_does_not_swallow_bugs():
    def broken(rows):
        raise KeyError('frequency')

    with pytest.raises(KeyError):
        write_isolating(broken, [1, 2], str)


# --- Row builders ------------------------------------------------------------------------------

def test_configuration_row_has_every_column():
    m = message(7, 'update', 'c1', 't1', frequency='hourly', timezone='Europe/Rome',
                namespace='team-a', enabled=False)

    row = configuration_row(m, '2024-01-01 00:00:00.000000')

    assert tuple(row) == TSC_CONFIGURATIONS.column_names
    assert row['cron_schedule'] == '0 * * * *'
    assert row['time_zone'] == 'Europe/Rome'
    assert row['enabled'] is False
    assert json.loads(row['config']) == m.config
    assert (row['source_topic'], row['source_partition'], row['source_offset']) == (
        'orders', 0, 7)


def test_processed_row_has_every_column():
    m = message(3, 'delete')
    row = processed_row(m, 'now')
    assert tuple(row) == PROCESSED_DATA.column_names
    assert row['payload'] == m.text
    assert row['operation'] == 'delete'


# --- upsert_tsc_configuration on a real SqliteWriter -------------------------------------------

def test_upsert_latest_message_per_key_wins(writer, db_path):
    batch = [
        message(0, 'create', frequency='daily'),
        message(2, 'update', frequency='hourly'),
        message(1, 'update', frequency='weekly'),
        message(3, 'create', 'c2', 't2'),
        message(4, 'update', 'c2', 't3', frequency='weekly'),
    ]

    done, failures = upsert_tsc_configuration(writer, batch, delete_operations=DELETES,
                                              updated_at='2024-05-05 05:05:05.000000')

    assert failures == []
    assert [(m.source.offset, m.superseded) for m in done] == [
        (0, True), (2, False), (1, True), (3, False), (4, False)]
    assert stored_configurations(db_path) == [
        ('c1', 't1', 'hourly', '0 * * * *', 'update', 0, 2),
        ('c2', 't2', 'daily', '0 0 * * *', 'create', 0, 3),
        ('c2', 't3', 'weekly', '0 0 * * 0', 'update', 0, 4),
    ]
    assert query(db_path, 'SELECT DISTINCT updated_at FROM tsc_configurations') == [
        ('2024-05-05 05:05:05.000000',)]


def test_upsert_latest_wins_per_partition_order(writer, db_path):
    # Within a batch, the greatest (topic, partition, offset) wins.
    batch = [message(9, frequency='daily', partition=0),
             message(1, frequency='hourly', partition=1)]

    done, _ = upsert_tsc_configuration(writer, batch, delete_operations=DELETES)

    assert [m.superseded for m in done] == [True, False]
    assert stored_configurations(db_path)[0][2] == 'hourly'


@pytest.mark.parametrize('later, applied', [
    (dict(offset=5), False),   # earlier than the stored offset of the same partition
    (dict(offset=10), True),   # the stored record itself, replayed
    (dict(offset=11), True),
    (dict(offset=5, partition=1), True),
    (dict(offset=5, topic='other'), True),
])
def test_upsert_stale_against_stored_row(writer, db_path, later, applied):
    upsert_tsc_configuration(writer, [message(10, frequency='daily')], delete_operations=DELETES)

    done, failures = upsert_tsc_configuration(
        writer, [message(operation='update', frequency='weekly', **later)],
        delete_operations=DELETES)

    assert failures == []
    assert [m.superseded for m in done] == [not applied]
    assert stored_configurations(db_path)[0][2] == ('weekly' if applied else 'daily')


def test_delete_takes_the_stored_config_along(writer, db_path):
    create = message(0, 'create', frequency='hourly', namespace='team-a', image='img:1')
    upsert_tsc_configuration(writer, [create], delete_operations=DELETES)
    delete = message(1, 'delete')
    assert delete.config is None

    done, failures = upsert_tsc_configuration(writer, [delete], delete_operations=DELETES)

    assert failures == []
    assert done == [delete]
    assert delete.superseded is False
    assert delete.config == create.config
    assert delete.config['namespace'] == 'team-a'
    assert stored_configurations(db_path) == []


def test_delete_without_a_stored_row(writer, db_path):
    done, failures = upsert_tsc_configuration(writer, [message(0, 'delete')],
                                              delete_operations=DELETES)
    assert failures == []
    assert [(m.superseded, m.config) for m in done] == [(False, None)]
    assert stored_configurations(db_path) == []


def test_stale_delete_keeps_the_row(writer, db_path):
    upsert_tsc_configuration(writer, [message(10)], delete_operations=DELETES)

    done, _ = upsert_tsc_configuration(writer, [message(3, 'delete')], delete_operations=DELETES)

    assert [m.superseded for m in done] == [True]
    assert len(stored_configurations(db_path)) == 1


def test_create_then_delete_in_one_batch_deletes(writer, db_path):
    upsert_tsc_configuration(writer, [message(0, namespace='ns-old')], delete_operations=DELETES)
    batch = [message(1, 'update', namespace='ns-new'), message(2, 'delete')]

    done, _ = upsert_tsc_configuration(writer, batch, delete_operations=DELETES)

    assert [m.superseded for m in done] == [True, False]
    # The delete addresses what the warehouse held, not the superseded update.
    assert done[1].config['namespace'] == 'ns-old'
    assert stored_configurations(db_path) == []


def test_upsert_failure_maps_to_every_message_of_the_key(writer, db_path):
    batch = [
        message(0, 'create', 'c1', 't1'),
        message(1, 'update', 'c1', 't1', frequency=None),  # latest, and the warehouse rejects it
        message(2, 'create', 'c2', 't2'),
        message(3, 'create', 'c3', 't3'),
    ]

    done, failures = upsert_tsc_configuration(writer, batch, delete_operations=DELETES)

    assert [m.source.offset for m in done] == [2, 3]
    assert [(m.source.offset, type(e)) for m, e in failures] == [
        (0, RejectedRowsError), (1, RejectedRowsError)]
    assert [row[:2] for row in stored_configurations(db_path)] == [('c2', 't2'), ('c3', 't3')]


def test_upsert_read_failure_fails_the_batch(db_path):
    class UnreadableWriter(SqliteWriter):
        def read_tsc_states(self, keys):
            raise TransientWarehouseError('connection lost')

    broken = UnreadableWriter(db_path)
    broken.create_tables()
    try:
        batch = [message(0), message(1, 'create', 'c2', 't2'),
                 message(2, 'delete', 'c3', 't3')]
        done, failures = upsert_tsc_configuration(broken, batch, delete_operations=DELETES)
    finally:
        broken.close()
    assert done == []
    assert [m.source.offset for m, _ in failures] == [0, 1, 2]
    assert stored_configurations(db_path) == []


def test_upsert_empty_batch(writer):
    assert upsert_tsc_configuration(writer, [], delete_operations=DELETES) == ([], [])


# --- save_to_impala ------------------------------------------------------------------------------

def test_save_to_impala_rows_and_replay(writer, db_path):
    batch = [message(0), message(1, 'update'), message(2, 'delete', 'c2', 't2'),
             message(0, partition=1)]

    rows, failures = save_to_impala(writer, batch, processed_at='2024-01-01 00:00:00.000000')
    again, failures_again = save_to_impala(writer, batch)

    assert failures == failures_again == []
    assert rows == [processed_row(m, '2024-01-01 00:00:00.000000') for m in batch]
    assert len(again) == 4
    assert stored_archive(db_path) == [
        ('orders', 0, 0, 'c1', 't1', 'create', batch[0].text),
        ('orders', 0, 1, 'c1', 't1', 'update', batch[1].text),
        ('orders', 0, 2, 'c2', 't2', 'delete', batch[2].text),
        ('orders', 1, 0, 'c1', 't1', 'create', batch[3].text),
    ]


def test_save_to_impala_isolates_a_rejected_row(writer, db_path):
    bad = message(1)
    bad.text = None
    batch = [message(0), bad, message(2)]

    rows, failures = save_to_impala(writer, batch)

    assert [row['source_offset'] for row in rows] == [0, 2]
    assert [(m.source.offset, type(e)) for m, e in failures] == [(1, RejectedRowsError)]
    assert [row[2] for row in stored_archive(db_path)] == [0, 2]


# --- The transforms in a pipeline ----------------------------------------------------------------

def _check_dead_letters(stage, expected_offsets):
    def check(actual):
        assert sorted(int(x.header(HEADER_SOURCE_OFFSET)) for x in actual) == sorted(
            expected_offsets)
        for letter in actual:
            assert letter.header(HEADER_STAGE) == stage.encode()
            assert letter.header(HEADER_ERROR_CLASS) == b'RejectedRowsError'
            assert letter.header(HEADER_SOURCE_TOPIC) == b'orders'
            assert letter.header(HEADER_SOURCE_PARTITION) == b'0'
            assert json.loads(letter.value)['n'] == int(letter.header(HEADER_SOURCE_OFFSET))
            assert letter.key is not None
    return check


def _summary(batch):
    return [(m.source.offset, m.operation, m.superseded, (m.config or {}).get('namespace'))
            for m in batch]


def test_upsert_and_archive_transforms(tmp_path):
    path = tmp_path / 'warehouse.db'
    url = f'sqlite:///{path}'
    seed = SqliteWriter(str(path))
    seed.create_tables()
    upsert_tsc_configuration(seed, [message(0, 'create', 'c9', 't9', namespace='ns-9')],
                             delete_operations=DELETES)
    seed.close()
    batches = [
        [message(1, 'create', 'c1', 't1', namespace='ns-1'),
         message(2, 'update', 'c1', 't1', frequency='hourly', namespace='ns-1'),
         message(3, 'delete', 'c9', 't9')],
        [message(4, 'create', 'c2', 't2'),
         message(5, 'create', 'c3', 't3', frequency=None),  # NOT NULL: rejected
         message(6, 'update', 'c4', 't4', frequency='weekly')],
    ]

    def run():
        with TestPipeline(runner='FnApiRunner') as pipeline:
            upserted = (pipeline
                        | beam.Create(batches)
                        | UpsertTscConfigurations(url, delete_operations=DELETES))
            archived = upserted['batches'] | ArchiveMessages(url)
            assert_that(
                upserted['batches'] | 'Summarize' >> beam.Map(_summary),
                equal_to([
                    [(1, 'create', True, 'ns-1'), (2, 'update', False, 'ns-1'),
                     (3, 'delete', False, 'ns-9')],
                    [(4, 'create', False, None), (6, 'update', False, None)],
                ]),
                label='upserted')
            assert_that(upserted['dead_letters'], _check_dead_letters('upsert', [5]),
                        label='upsert_dead_letters')
            assert_that(
                archived['rows'] | 'Positions' >> beam.Map(
                    lambda r: (r['source_offset'], r['operation'], r['payload'] is not None)),
                equal_to([(1, 'create', True), (2, 'update', True), (3, 'delete', True),
                          (4, 'create', True), (6, 'update', True)]),
                label='archived')
            assert_that(archived['dead_letters'], equal_to([]), label='archive_dead_letters')

    run()
    expected_configurations = [
        ('c1', 't1', 'hourly', '0 * * * *', 'update', 0, 2),
        ('c2', 't2', 'daily', '0 0 * * *', 'create', 0, 4),
        ('c4', 't4', 'weekly', '0 0 * * 0', 'update', 0, 6),
    ]
    assert stored_configurations(path) == expected_configurations
    archive = stored_archive(path)
    assert [row[2] for row in archive] == [1, 2, 3, 4, 6]
    assert [row[6] for row in archive] == [m.text for b in batches for m in b
                                           if m.source.offset != 5]

    # Replaying the same records changes nothing and adds no archive row.
    run_again = TestPipeline(runner='FnApiRunner')
    replayed = (run_again | beam.Create(batches)
                | UpsertTscConfigurations(url, delete_operations=DELETES))
    _ = replayed['batches'] | ArchiveMessages(url)
    run_again.run().wait_until_finish()
    assert stored_configurations(path) == expected_configurations
    assert stored_archive(path) == archive


def test_archive_transform_dead_letters(tmp_path):
    url = f'sqlite:///{tmp_path / "w.db"}'
    bad = message(1, 'delete')
    bad.customer_id = None  # a row the warehouse refuses (NOT NULL)

    with TestPipeline(runner='FnApiRunner') as pipeline:
        archived = pipeline | beam.Create([[message(0), bad, message(2)]]) | ArchiveMessages(url)
        assert_that(archived['rows'] | beam.Map(lambda r: r['source_offset']),
                    equal_to([0, 2]), label='rows')
        assert_that(archived['dead_letters'], _check_dead_letters('archive', [1]),
                    label='dead_letters')

    assert [row[2] for row in stored_archive(tmp_path / 'w.db')] == [0, 2]
