"""Tests for transforms.batching: shard_of and BatchMessagesByTsc."""

from __future__ import annotations

import collections

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from transforms.batching import BatchMessagesByTsc, shard_of
from transforms.records import Message, SourceRecord


def message(offset: int, customer_id: str, tsc_id: str, operation: str = 'create',
            partition: int = 0) -> Message:
    source = SourceRecord(value=b'{}', key=None, topic='orders', partition=partition,
                          offset=offset)
    return Message(source=source, operation=operation, customer_id=customer_id, tsc_id=tsc_id,
                   payload={}, text='{}')


KEYS = [('c1', 't1'), ('c1', 't2'), ('c2', 't1'), ('c3', '../x'), ('ü', '日本'), ('a', 'bc'),
        ('ab', 'c')]


def messages_for(keys, per_key):
    """``per_key[i]`` messages of ``keys[i]``, interleaved, with unique offsets."""
    result, offset = [], 0
    for round_ in range(max(per_key)):
        for key, count in zip(keys, per_key, strict=True):
            if round_ < count:
                result.append(message(offset, *key, operation='update' if round_ else 'create'))
                offset += 1
    return result


# --- shard_of -----------------------------------------------------------------------------------

@pytest.mark.parametrize('customer_id, tsc_id, num_shards, shard', [
    # Pinned: the shard must be the same on every worker, process and release.
    ('c1', 't1', 8, 5),
    ('c1', 't2', 8, 4),
    ('customer-42', 'tsc-7', 16, 1),
    ('ü', '日本', 1000, 813),
    ('../x', '?#', 3, 0),
    ('anything', 'at all', 1, 0),
])
def test_shard_of_is_stable(customer_id, tsc_id, num_shards, shard):
    assert shard_of(message(0, customer_id, tsc_id), num_shards) == shard


@pytest.mark.parametrize('num_shards', [1, 2, 3, 8, 64, 1000])
def test_shard_of_within_range_and_per_key(num_shards):
    shards = set()
    for i in range(300):
        customer_id, tsc_id = f'customer-{i % 37}', f'tsc-{i}'
        shard = shard_of(message(i, customer_id, tsc_id), num_shards)
        assert 0 <= shard < num_shards
        # Only the key matters: not the offset, partition nor operation.
        assert shard == shard_of(message(i + 1000, customer_id, tsc_id, 'delete', partition=4),
                                 num_shards)
        shards.add(shard)
    if num_shards <= 8:
        assert shards == set(range(num_shards))  # 300 keys spread over every shard


# --- BatchMessagesByTsc -------------------------------------------------------------------------

def _check_batches(expected, batch_size, num_shards, *, whole_shards):
    """A matcher over the batches: sizes, exactly-once, one shard per batch."""
    expected_offsets = sorted(m.source.offset for m in expected)
    key_of = {m.source.offset: m.tsc_key for m in expected}

    def check(batches):
        assert batches, 'no batches'
        offsets = [m.source.offset for batch in batches for m in batch]
        assert sorted(offsets) == expected_offsets  # every message exactly once
        for batch in batches:
            assert isinstance(batch, list)
            assert 1 <= len(batch) <= batch_size
            assert len({shard_of(m, num_shards) for m in batch}) == 1
            for m in batch:
                assert m.tsc_key == key_of[m.source.offset]
        if whole_shards:
            batches_of_key = collections.defaultdict(set)
            for index, batch in enumerate(batches):
                for m in batch:
                    batches_of_key[m.tsc_key].add(index)
            assert all(len(indexes) == 1 for indexes in batches_of_key.values()), batches_of_key
            assert len(batches) == len({shard_of(m, num_shards) for m in expected})

    return check


def test_batch_messages_by_tsc():
    # A batch as large as the input: every key's messages land in one batch.
    everything = messages_for(KEYS, [5, 1, 3, 4, 2, 1, 6])
    # Small batches: bounded sizes, still one shard per batch and no message lost.
    many = messages_for([(f'c{i}', f't{i}') for i in range(12)], [7] * 12)
    # One busy key: its messages span several batches, each at most batch_size.
    busy = messages_for([('hot', 'key')], [23])

    with TestPipeline(runner='FnApiRunner') as pipeline:
        whole = (pipeline
                 | 'CreateAll' >> beam.Create(everything)
                 | 'BatchAll' >> BatchMessagesByTsc(batch_size=len(everything), num_shards=3))
        assert_that(whole, _check_batches(everything, len(everything), 3, whole_shards=True),
                    label='whole')
        small = (pipeline
                 | 'CreateMany' >> beam.Create(many)
                 | 'BatchMany' >> BatchMessagesByTsc(batch_size=4, num_shards=5))
        assert_that(small, _check_batches(many, 4, 5, whole_shards=False), label='small')
        hot = (pipeline
               | 'CreateBusy' >> beam.Create(busy)
               | 'BatchBusy' >> BatchMessagesByTsc(batch_size=5, num_shards=8))
        assert_that(hot, _check_batches(busy, 5, 8, whole_shards=False), label='hot')
        assert_that(hot | 'Sizes' >> beam.Map(len) | beam.combiners.ToList()
                    | beam.Map(sorted),
                    lambda sizes: _assert_equal(sizes, [[3, 5, 5, 5, 5]]), label='hot_sizes')


def _assert_equal(actual, expected):
    assert actual == expected, actual


@pytest.mark.parametrize('kwargs', [
    {'batch_size': 0, 'num_shards': 1},
    {'batch_size': 1, 'num_shards': 0},
    {'batch_size': -5, 'num_shards': 4},
    {'batch_size': 10, 'num_shards': 4, 'max_buffering_seconds': 0},
    {'batch_size': 10, 'num_shards': 4, 'max_buffering_seconds': -1.0},
])
def test_batch_messages_construction_errors(kwargs):
    with pytest.raises(ValueError):
        BatchMessagesByTsc(**kwargs)


def test_batch_messages_accepts_buffering_bound():
    BatchMessagesByTsc(batch_size=1, num_shards=1, max_buffering_seconds=0.5)
