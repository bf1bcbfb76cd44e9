"""Batching stage: groups parsed messages into bounded batches, all of one TSC in one shard."""

from __future__ import annotations

import json
import zlib

import apache_beam as beam

from transforms.records import Message


def shard_of(message: Message, num_shards: int) -> int:
    """A stable shard for the message's (customerId, tscId), the same on every worker."""
    raw = json.dumps([message.customer_id, message.tsc_id], ensure_ascii=False).encode('utf-8')
    return zlib.crc32(raw) % num_shards


class BatchMessagesByTsc(beam.PTransform):
    """Groups messages into lists of at most ``batch_size``.

    Keyed (the default, and what streaming uses): every message of one TSC lands in
    the same shard, so one worker at a time writes a given key and per-key order holds
    across batches; ``max_buffering_seconds`` bounds how long a message waits for its
    batch. Unkeyed (bounded local runs): batches are cut in input order with
    ``BatchElements``, with no shuffle, so memory stays flat however large the input;
    later batches still win over earlier ones through the warehouse's offset guard.

    Args:
        batch_size: Upper bound on messages per batch.
        num_shards: Number of shard keys (the parallelism of the stages after it).
        max_buffering_seconds: Latency bound in streaming; None for bounded input.
        keyed: Group by shard of the TSC key (True) or batch in input order (False).
    """

    def __init__(self, batch_size: int, num_shards: int,
                 max_buffering_seconds: float | None = None, *, keyed: bool = True):
        super().__init__()
        if batch_size < 1 or num_shards < 1:
            raise ValueError('--batch_size and --num_shards must be at least 1')
        if max_buffering_seconds is not None and max_buffering_seconds <= 0:
            raise ValueError('--max_batch_delay_seconds must be positive')
        self._batch_size = batch_size
        self._num_shards = num_shards
        self._max_buffering_seconds = max_buffering_seconds
        self._keyed = keyed

    def expand(self, messages):
        if not self._keyed:
            return messages | 'BatchElements' >> beam.BatchElements(
                min_batch_size=self._batch_size, max_batch_size=self._batch_size)
        num_shards = self._num_shards
        return (messages
                | 'KeyByShard' >> beam.Map(lambda m: (shard_of(m, num_shards), m)
                                           ).with_output_types(tuple[int, Message])
                | 'GroupIntoBatches' >> beam.GroupIntoBatches(
                    self._batch_size, max_buffering_duration_secs=self._max_buffering_seconds)
                | 'DropShard' >> beam.Map(lambda keyed: list(keyed[1])))
