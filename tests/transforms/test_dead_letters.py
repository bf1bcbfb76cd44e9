"""Tests for transforms.dead_letters: dead-letter records and unexpected-failure handling."""

from __future__ import annotations

import datetime

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.dead_letters import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_FAILED_AT,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_STAGE,
    STAGES,
    StageError,
    dead_letter,
    dead_letter_stage,
    unexpected_failure_dead_letters,
    with_safety_net,
)
from transforms.records import KafkaRecord, Message, SourceRecord

FAILED_AT = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)


def source(offset: int = 42, *, key: bytes | None = b'key-\xff', value: bytes = b'\x00raw\xfe',
           topic: str = 'orchestrator', partition: int = 3) -> SourceRecord:
    return SourceRecord(value=value, key=key, topic=topic, partition=partition, offset=offset)


def message(offset: int, customer_id: str = 'c', tsc_id: str = 't') -> Message:
    return Message(source=source(offset, key=f'k{offset}'.encode(), value=f'v{offset}'.encode()),
                   operation='create', customer_id=customer_id, tsc_id=tsc_id, payload={},
                   text='{}')


class _RetriedError(StageError):
    stage = 'enrich'


@pytest.mark.parametrize('stage', STAGES)
def test_dead_letter_headers(stage):
    record = source()

    letter = dead_letter(record, stage, ValueError('bad thing'), failed_at=FAILED_AT)

    assert isinstance(letter, KafkaRecord)
    assert letter.key == b'key-\xff'
    assert letter.value == b'\x00raw\xfe'
    assert letter.headers == (
        (HEADER_STAGE, stage.encode()),
        (HEADER_ERROR_CLASS, b'ValueError'),
        (HEADER_ERROR_MESSAGE, b'bad thing'),
        (HEADER_SOURCE_TOPIC, b'orchestrator'),
        (HEADER_SOURCE_PARTITION, b'3'),
        (HEADER_SOURCE_OFFSET, b'42'),
        (HEADER_FAILED_AT, b'2024-05-06T07:08:09.123+00:00'),
    )
    assert dead_letter_stage(letter) == stage


def test_dead_letter_header_names_are_the_kafka_connect_style_ones():
    assert (HEADER_STAGE, HEADER_ERROR_CLASS, HEADER_ERROR_MESSAGE, HEADER_SOURCE_TOPIC,
            HEADER_SOURCE_PARTITION, HEADER_SOURCE_OFFSET, HEADER_ATTEMPTS, HEADER_FAILED_AT) == (
        'dlq.stage', 'dlq.error.class', 'dlq.error.message', 'dlq.source.topic',
        'dlq.source.partition', 'dlq.source.offset', 'dlq.attempts', 'dlq.failed.at')
    assert set(STAGES) == {'parse', 'validate', 'enrich', 'upsert', 'render', 'publish',
                           'archive'}


def test_dead_letter_none_key_and_default_failed_at():
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    letter = dead_letter(source(key=None), 'parse', KeyError('x'))
    after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)

    assert letter.key is None
    failed_at = datetime.datetime.fromisoformat(letter.header(HEADER_FAILED_AT).decode())
    assert before <= failed_at <= after
    assert letter.header(HEADER_ERROR_CLASS) == b'KeyError'


@pytest.mark.parametrize('stage', ['', 'PARSE', 'unknown', 'dlq', 'parse '])
def test_dead_letter_rejects_unknown_stage(stage):
    with pytest.raises(ValueError, match='unknown dead-letter stage'):
        dead_letter(source(), stage, ValueError('x'))


def test_dead_letter_error_without_message_uses_class_name():
    letter = dead_letter(source(), 'upsert', RuntimeError())
    assert letter.header(HEADER_ERROR_MESSAGE) == b'RuntimeError'


def test_dead_letter_truncates_longmessage():
    letter = dead_letter(source(), 'render', ValueError('x' * 10_000))

    text = letter.header(HEADER_ERROR_MESSAGE).decode()
    assert text == 'x' * 2000 + '…'


def test_dead_letter_keeps_message_at_truncation_limit():
    letter = dead_letter(source(), 'render', ValueError('y' * 2000))
    assert letter.header(HEADER_ERROR_MESSAGE).decode() == 'y' * 2000


def test_dead_letter_message_with_unencodable_text_is_escaped():
    letter = dead_letter(source(), 'parse', ValueError('bad \udcff here'))
    assert letter.header(HEADER_ERROR_MESSAGE) == b'bad \\udcff here'


@pytest.mark.parametrize('error, attempts, expected', [
    (ValueError('x'), None, None),
    (ValueError('x'), 3, b'3'),
    (ValueError('x'), 0, b'0'),
    (_RetriedError('x'), None, None),
    (_RetriedError('x', attempts=5), None, b'5'),
    (_RetriedError('x', attempts=5), 2, b'2'),  # the explicit argument wins
])
def test_dead_letter_attempts_header(error, attempts, expected):
    letter = dead_letter(source(), 'enrich', error, attempts=attempts, failed_at=FAILED_AT)

    assert letter.header(HEADER_ATTEMPTS) == expected
    names = [name for name, _ in letter.headers]
    assert names.count(HEADER_ATTEMPTS) == (0 if expected is None else 1)
    # failed.at stays the last header either way.
    assert names[-1] == HEADER_FAILED_AT


def test_dead_letter_stage_of_other_record_is_none():
    assert dead_letter_stage(KafkaRecord(key=None, value=b'x')) is None


def _failure(element):
    try:
        raise ZeroDivisionError('division by zero')
    except ZeroDivisionError as e:
        return element, (type(e), repr(e), 'Traceback ...')


def test_unexpected_failure_of_a_source_record():
    record = source(7)

    letters = list(unexpected_failure_dead_letters('parse')(_failure(record)))

    assert len(letters) == 1
    (letter,) = letters
    assert (letter.key, letter.value) == (record.key, record.value)
    assert dead_letter_stage(letter) == 'parse'
    assert letter.header(HEADER_ERROR_CLASS) == b'ZeroDivisionError'
    assert letter.header(HEADER_ERROR_MESSAGE) == (
        b"unexpected error: ZeroDivisionError('division by zero')")
    assert letter.header(HEADER_SOURCE_OFFSET) == b'7'
    assert letter.header(HEADER_ATTEMPTS) is None


def test_unexpected_failure_of_amessage():
    item = message(11)

    letters = list(unexpected_failure_dead_letters('render')(_failure(item)))

    assert [(x.key, x.value, dead_letter_stage(x), x.header(HEADER_SOURCE_OFFSET))
            for x in letters] == [(b'k11', b'v11', 'render', b'11')]


def test_unexpected_failure_of_a_batch_gives_one_dead_letter_permessage():
    batch = [message(1), message(2, 'c2'), message(3, 'c', 't3')]

    letters = list(unexpected_failure_dead_letters('enrich')(_failure(batch)))

    assert [(x.key, x.value, dead_letter_stage(x), x.header(HEADER_SOURCE_OFFSET))
            for x in letters] == [(b'k1', b'v1', 'enrich', b'1'), (b'k2', b'v2', 'enrich', b'2'),
                                  (b'k3', b'v3', 'enrich', b'3')]
    assert all(x.header(HEADER_ERROR_CLASS) == b'ZeroDivisionError' for x in letters)


def test_unexpected_failure_of_an_empty_batch_gives_nothing():
    assert list(unexpected_failure_dead_letters('archive')(_failure([]))) == []


def test_unexpected_failure_with_non_class_error_type():
    letters = list(unexpected_failure_dead_letters('upsert')(
        (source(), ('SomeError', 'SomeError()', ''))))
    assert letters[0].header(HEADER_ERROR_CLASS) == b'SomeError'


def test_unexpected_failure_rejects_unknown_stage():
    with pytest.raises(ValueError, match='unknown dead-letter stage'):
        list(unexpected_failure_dead_letters('nowhere')(_failure(source())))


class _ExplodingFn(beam.DoFn):
    """Routes one expected failure itself and raises on a batch it did not expect."""

    def process(self, batch):
        if any(m.customer_id == 'boom' for m in batch):
            raise RuntimeError('bug in a stage')
        yield batch


def test_safety_net_dead_letters_a_whole_batch_on_an_unexpected_error():
    good = [message(0, 'c1'), message(1, 'c2')]
    bad = [message(2, 'c3'), message(3, 'boom')]
    with TestPipeline(runner='FnApiRunner') as p:
        outputs = with_safety_net(p | beam.Create([good, bad]), 'Stage', 'upsert', 'batches',
                                  _ExplodingFn())
        offsets = outputs['batches'] | beam.Map(lambda b: sorted(m.source.offset for m in b))
        assert_that(outputs['dead_letters'], equal_to([]), label='RoutedDeadLetters')
        dead = outputs['failed'] | 'Dead' >> beam.Map(
            lambda d: (int(d.header(HEADER_SOURCE_OFFSET)), d.header(HEADER_STAGE).decode(),
                       d.header(HEADER_ERROR_CLASS).decode(),
                       'bug in a stage' in d.header(HEADER_ERROR_MESSAGE).decode()))
        assert_that(offsets, equal_to([[0, 1]]), label='Survivors')
        assert_that(dead, equal_to([(2, 'upsert', 'RuntimeError', True),
                                    (3, 'upsert', 'RuntimeError', True)]), label='DeadLetters')
