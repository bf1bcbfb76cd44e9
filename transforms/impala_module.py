"""Warehouse stages: upsert TSC configurations and archive every processed message."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.dead_letters import dead_letter, with_safety_net
from transforms.records import Message, format_timestamp, utc_now
from transforms.warehouse import (
    RejectedRowsError,
    TransientWarehouseError,
    WarehouseError,
    WarehouseWriter,
    open_warehouse,
)

_LOGGER = logging.getLogger(__name__)

T = TypeVar('T')


def write_isolating(write: Callable[[list[Any]], None], items: list[T],
                    row: Callable[[T], Any]) -> list[tuple[T, WarehouseError]]:
    """Writes ``items`` in one call; if the warehouse rejects their content, splits to isolate.

    Returns the items that could not be written, each with its error. Rows that
    were written stay written: the callers' statements are idempotent upserts and
    deletes, so writing a half again after a split never duplicates anything.
    """
    if not items:
        return []
    try:
        write([row(item) for item in items])
        return []
    except RejectedRowsError as e:
        if len(items) == 1:
            return [(items[0], e)]
        middle = len(items) // 2
        return (write_isolating(write, items[:middle], row)
                + write_isolating(write, items[middle:], row))
    except TransientWarehouseError as e:
        return [(item, e) for item in items]


def configuration_row(message: Message, updated_at: str) -> dict[str, Any]:
    """The ``tsc_configurations`` row of an enriched create/update message."""
    config = message.config or {}
    return {
        'customer_id': message.customer_id,
        'tsc_id': message.tsc_id,
        'frequency': config.get('frequency'),
        'cron_schedule': message.cron_schedule,
        'time_zone': config.get('timezone'),
        'enabled': bool(config.get('enabled', True)),
        'config': json.dumps(config, sort_keys=True, ensure_ascii=False, separators=(',', ':')),
        'operation': message.operation,
        'source_topic': message.source.topic,
        'source_partition': message.source.partition,
        'source_offset': message.source.offset,
        'updated_at': updated_at,
    }


def processed_row(message: Message, processed_at: str) -> dict[str, Any]:
    """The ``processed_data`` row of a processed message."""
    return {
        'source_topic': message.source.topic,
        'source_partition': message.source.partition,
        'source_offset': message.source.offset,
        'customer_id': message.customer_id,
        'tsc_id': message.tsc_id,
        'operation': message.operation,
        'payload': message.text,
        'processed_at': processed_at,
    }


def _is_stale(message: Message, stored) -> bool:
    return (stored is not None and stored.source_topic == message.source.topic
            and stored.source_partition == message.source.partition
            and stored.source_offset > message.source.offset)


def upsert_tsc_configuration(
    writer: WarehouseWriter,
    batch: Sequence[Message],
    *,
    delete_operations: Collection[str],
    updated_at: str | None = None,
) -> tuple[list[Message], list[tuple[Message, WarehouseError]]]:
    """Applies a batch to ``tsc_configurations``, last write wins per key.

    Per (customerId, tscId) only the latest message of the batch is applied; the
    others, and any message older than the row already stored from the same
    topic and partition, are marked ``superseded`` (still archived, no job record).
    A delete takes the stored configuration along, so its job record addresses
    the namespace the create used.

    Returns:
        The messages that went through, and the failed ones with their errors.
    """
    updated_at = updated_at or format_timestamp(utc_now())
    latest: dict[tuple[str, str], Message] = {}
    for message in batch:
        current = latest.get(message.tsc_key)
        if current is None or message.order > current.order:
            latest[message.tsc_key] = message
    try:
        stored = writer.read_tsc_states(list(latest))
    except WarehouseError as e:
        return [], [(message, e) for message in batch]
    upserts, deletes = [], []
    for key, message in latest.items():
        state = stored.get(key)
        if _is_stale(message, state):
            continue
        if message.operation in delete_operations:
            if state is not None and state.config:
                message.config = json.loads(state.config)
            deletes.append(message)
        else:
            upserts.append(message)
    failed = write_isolating(writer.upsert_tsc_configurations, upserts,
                             lambda m: configuration_row(m, updated_at))
    failed += write_isolating(writer.delete_tsc_configurations, deletes,
                              lambda m: configuration_row(m, updated_at))
    failed_keys = {message.tsc_key: error for message, error in failed}
    applied = {id(m) for m in upserts + deletes}
    done, failures = [], []
    for message in batch:
        if message.tsc_key in failed_keys:
            # Earlier messages of a key whose latest write failed are not silently dropped.
            failures.append((message, failed_keys[message.tsc_key]))
            continue
        message.superseded = id(message) not in applied
        done.append(message)
    return done, failures


def save_to_impala(
    writer: WarehouseWriter,
    batch: Sequence[Message],
    *,
    processed_at: str | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[Message, WarehouseError]]]:
    """Archives one ``processed_data`` row per message (an upsert, so replays add nothing).

    Returns:
        The rows written, and the failed messages with their errors.
    """
    processed_at = processed_at or format_timestamp(utc_now())
    pairs = [(message, processed_row(message, processed_at)) for message in batch]
    failed = write_isolating(writer.upsert_processed_data, pairs, lambda pair: pair[1])
    failed_ids = {id(message) for (message, _), _ in failed}
    rows = [row for message, row in pairs if id(message) not in failed_ids]
    return rows, [(message, error) for (message, _), error in failed]


class _WarehouseFn(beam.DoFn):
    """Base of the warehouse DoFns: one writer per DoFn instance, opened in ``setup()``."""

    def __init__(self, warehouse_url: str, writer_settings: dict[str, Any]):
        self._warehouse_url = warehouse_url
        self._writer_settings = writer_settings
        self._writer: WarehouseWriter | None = None
        self._statements = Metrics.counter('orchestrator', 'sql_statements')

    def setup(self):
        self._writer = open_warehouse(self._warehouse_url, **self._writer_settings)

    def teardown(self):
        if self._writer is not None:
            self._writer.close()

    def _count_statements(self, before: int) -> None:
        self._statements.inc(self._writer.statements_executed - before)

    def _dead_letters(self, stage: str, failures, counter):
        for message, error in failures:
            counter.inc()
            _LOGGER.warning('dead letter at %s for %s:%s@%s: %s', stage, message.source.topic,
                            message.source.partition, message.source.offset, error)
            yield beam.pvalue.TaggedOutput(
                'dead_letters', dead_letter(message.source, stage, error))


class _UpsertBatchFn(_WarehouseFn):

    def __init__(self, warehouse_url, writer_settings, delete_operations):
        super().__init__(warehouse_url, writer_settings)
        self._delete_operations = frozenset(delete_operations)
        self._upserted = Metrics.counter('orchestrator', 'upserted')
        self._superseded = Metrics.counter('orchestrator', 'superseded')
        self._dead = Metrics.counter('orchestrator', 'dead_letters_upsert')

    def process(self, batch: list[Message]):
        before = self._writer.statements_executed
        done, failures = upsert_tsc_configuration(
            self._writer, batch, delete_operations=self._delete_operations)
        self._count_statements(before)
        self._upserted.inc(sum(1 for m in done if not m.superseded))
        self._superseded.inc(sum(1 for m in done if m.superseded))
        yield from self._dead_letters('upsert', failures, self._dead)
        if done:
            yield done


class _ArchiveBatchFn(_WarehouseFn):

    def __init__(self, warehouse_url, writer_settings):
        super().__init__(warehouse_url, writer_settings)
        self._archived = Metrics.counter('orchestrator', 'archived')
        self._dead = Metrics.counter('orchestrator', 'dead_letters_archive')

    def process(self, batch: list[Message]):
        before = self._writer.statements_executed
        rows, failures = save_to_impala(self._writer, batch)
        self._count_statements(before)
        self._archived.inc(len(rows))
        yield from self._dead_letters('archive', failures, self._dead)
        yield from rows


class UpsertTscConfigurations(beam.PTransform):
    """Writes each batch's latest state per TSC to ``tsc_configurations``.

    Takes batches of enriched messages and returns the batches (messages marked
    ``superseded`` where a later one won) and ``dead_letters`` at stage ``upsert``.

    Args:
        warehouse_url: ``sqlite:///PATH`` or ``impala://…``.
        delete_operations: Operations that delete the row instead of upserting it.
        writer_settings: Extra keyword arguments for the writer (batch bounds, retries).
    """

    def __init__(self, warehouse_url: str, *, delete_operations: Collection[str] = ('delete',),
                 writer_settings: dict[str, Any] | None = None):
        super().__init__()
        self._warehouse_url = warehouse_url
        self._delete_operations = tuple(delete_operations)
        self._writer_settings = dict(writer_settings or {})

    def expand(self, batches):
        return with_safety_net(batches, 'UpsertBatch', 'upsert', 'batches', _UpsertBatchFn(
            self._warehouse_url, self._writer_settings, self._delete_operations))


class ArchiveMessages(beam.PTransform):
    """Archives every processed message as one ``processed_data`` row.

    Takes batches of messages and returns the written rows (dicts) and
    ``dead_letters`` at stage ``archive``.

    Args:
        warehouse_url: ``sqlite:///PATH`` or ``impala://…``.
        writer_settings: Extra keyword arguments for the writer.
    """

    def __init__(self, warehouse_url: str, *, writer_settings: dict[str, Any] | None = None):
        super().__init__()
        self._warehouse_url = warehouse_url
        self._writer_settings = dict(writer_settings or {})

    def expand(self, batches):
        return with_safety_net(batches, 'ArchiveBatch', 'archive', 'rows', _ArchiveBatchFn(
            self._warehouse_url, self._writer_settings))
