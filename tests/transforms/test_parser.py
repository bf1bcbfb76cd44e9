"""Tests for transforms.parser: parse_message and the ParseMessages transform."""

from __future__ import annotations

import datetime
import json

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.handlers import operations
from transforms.dead_letters import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_FAILED_AT,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_STAGE,
)
from transforms.parser import (
    DEFAULT_MAX_MESSAGE_BYTES,
    InvalidMessageError,
    ParseMessages,
    parse_message,
)
from transforms.records import Message, SourceRecord

OPERATIONS = operations()


def record(value: bytes | str, *, key: bytes | None = b'k', topic: str = 'orders',
           partition: int = 0, offset: int = 0) -> SourceRecord:
    if isinstance(value, str):
        value = value.encode('utf-8')
    return SourceRecord(value=value, key=key, topic=topic, partition=partition, offset=offset)


def doc(**fields) -> str:
    """A message with the three required fields, overridable; ``_DROP`` drops a field."""
    base = {'operation': 'create', 'customerId': 'c1', 'tscId': 't1'}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not _DROP})


_DROP = object()


# --- parse_message: accepted inputs ----------------------------------------------------------

GOOD = [
    # (raw text, operation, customerId, tscId)
    (doc(), 'create', 'c1', 't1'),
    (doc(operation='update'), 'update', 'c1', 't1'),
    (doc(operation='delete'), 'delete', 'c1', 't1'),
    (doc(operation='CREATE'), 'create', 'c1', 't1'),
    (doc(operation='Delete'), 'delete', 'c1', 't1'),
    (doc(operation='  uPdAtE \t\n'), 'update', 'c1', 't1'),
    ('  \n\t' + doc() + '\r\n  ', 'create', 'c1', 't1'),
    ('{ "tscId" : "t1" ,\n "customerId":"c1", "operation" :"create" }', 'create', 'c1', 't1'),
    # Ids are opaque: kept exactly, hostile-looking ones are valid at parse.
    (doc(customerId="c'; DROP TABLE tsc_configurations;--", tscId='1 OR 1=1'),
     'create', "c'; DROP TABLE tsc_configurations;--", '1 OR 1=1'),
    (doc(customerId='../../etc/passwd', tscId='..'), 'create', '../../etc/passwd', '..'),
    (doc(customerId='a/b?c#d%2F', tscId='.'), 'create', 'a/b?c#d%2F', '.'),
    (doc(customerId=' c1 ', tscId='t1 '), 'create', ' c1 ', 't1 '),
    (doc(customerId='clïent-ü', tscId='日本'), 'create', 'clïent-ü', '日本'),
    (json.dumps({'operation': 'create', 'customerId': 'ü', 'tscId': 't'}, ensure_ascii=True),
     'create', 'ü', 't'),
]


@pytest.mark.parametrize('text, operation, customer_id, tsc_id', GOOD)
def test_parse_message_accepts(text, operation, customer_id, tsc_id):
    source = record(text, offset=7)

    message = parse_message(source, operations=OPERATIONS)

    assert isinstance(message, Message)
    assert message.operation == operation
    assert message.customer_id == customer_id
    assert message.tsc_id == tsc_id
    assert message.source is source
    assert message.text == text
    assert message.payload == json.loads(text)
    assert message.tsc_key == (customer_id, tsc_id)
    assert message.order == ('orders', 0, 7)
    assert message.config is None and message.job is None and not message.superseded


def test_parse_message_keeps_extra_fields_in_payload():
    text = doc(extra={'nested': [1, 2, {'x': None}]}, priority=3, operation='UPDATE')

    message = parse_message(record(text), operations=OPERATIONS)

    assert message.payload['extra'] == {'nested': [1, 2, {'x': None}]}
    assert message.payload['priority'] == 3
    # The payload is the message as sent: the operation keeps its original case there.
    assert message.payload['operation'] == 'UPDATE'
    assert message.operation == 'update'


def test_parse_message_accepts_bytearray():
    message = parse_message(record(bytearray(doc().encode())), operations=OPERATIONS)
    assert message.tsc_key == ('c1', 't1')


# --- parse_message: every poison kind --------------------------------------------------------

POISON = [
    # (id, raw bytes, fragment of the error message)
    ('invalid-json', b'{not json', 'not valid JSON'),
    ('truncated-json', doc().encode()[:-1], 'not valid JSON'),
    ('empty-line', b'', 'not valid JSON'),
    ('whitespace-line', b'  \t ', 'not valid JSON'),
    ('trailing-garbage', (doc() + ' x').encode(), 'not valid JSON'),
    ('json-array', b'[{"operation": "create", "customerId": "c", "tscId": "t"}]',
     'got a JSON array'),
    ('json-string', b'"create"', 'got a JSON string'),
    ('json-number', b'42', 'got a JSON number'),
    ('json-float', b'-1.5e3', 'got a JSON number'),
    ('json-null', b'null', 'got a JSON null'),
    ('json-bool', b'true', 'got a JSON boolean'),
    ('missing-operation', doc(operation=_DROP).encode(), "'operation' is missing"),
    ('missing-customer', doc(customerId=_DROP).encode(), "'customerId' is missing"),
    ('missing-tsc', doc(tscId=_DROP).encode(), "'tscId' is missing"),
    ('empty-object', b'{}', "'operation' is missing"),
    ('empty-operation', doc(operation='').encode(), "'operation' must not be empty"),
    ('empty-customer', doc(customerId='').encode(), "'customerId' must not be empty"),
    ('empty-tsc', doc(tscId='').encode(), "'tscId' must not be empty"),
    ('blank-operation', doc(operation=' \t\n').encode(), "'operation' must not be empty"),
    ('blank-customer', doc(customerId='   ').encode(), "'customerId' must not be empty"),
    ('blank-tsc', doc(tscId='\u3000').encode(), "'tscId' must not be empty"),
    ('null-customer', doc(customerId=None).encode(), "'customerId' must be a string, got a "
                                                     'JSON null'),
    ('number-customer', doc(customerId=12).encode(), "'customerId' must be a string, got a "
                                                     'JSON number'),
    ('bool-tsc', doc(tscId=True).encode(), "'tscId' must be a string, got a JSON boolean"),
    ('array-tsc', doc(tscId=['t1']).encode(), "'tscId' must be a string, got a JSON array"),
    ('object-customer', doc(customerId={'id': 'c1'}).encode(),
     "'customerId' must be a string, got a JSON object"),
    ('number-operation', doc(operation=1).encode(), "'operation' must be a string"),
    ('unknown-operation', doc(operation='upsert').encode(), "unknown operation 'upsert'"),
    ('unknown-operation-prefix', doc(operation='create!').encode(), 'unknown operation'),
    ('unknown-operation-inner-space', doc(operation='cre ate').encode(), 'unknown operation'),
    ('non-utf8', b'{"operation": "create", "customerId": "\xff", "tscId": "t"}',
     'not valid UTF-8'),
    ('latin1', '{"operation": "create", "customerId": "caf\u00e9", "tscId": "t"}'.encode(
        'latin-1'), 'not valid UTF-8'),
    ('truncated-utf8', b'\xe2\x82', 'not valid UTF-8'),
    ('utf8-surrogate-bytes', b'\xed\xa0\x80', 'not valid UTF-8'),
    ('utf16', doc().encode('utf-16'), 'not valid UTF-8'),
    ('bom', b'\xef\xbb\xbf' + doc().encode(), 'not valid JSON'),
    ('escaped-lone-surrogate-customer', doc().replace('"c1"', '"\\ud800"').encode(),
     "'customerId' is not valid Unicode"),
    ('escaped-lone-surrogate-tsc', doc().replace('"t1"', '"x\\udfff"').encode(),
     "'tscId' is not valid Unicode"),
    ('deep-array', b'[' * 200_000 + b']' * 200_000, 'nested too deeply'),
    ('deep-in-object', (doc()[:-1] + ', "x": ' + '{"a":' * 200_000 + '1' + '}' * 200_001
                        ).encode(), 'nested too deeply'),
]


@pytest.mark.parametrize('value, fragment', [(v, f) for _, v, f in POISON],
                         ids=[i for i, _, _ in POISON])
def test_parse_message_rejects(value, fragment):
    with pytest.raises(InvalidMessageError) as caught:
        parse_message(record(value), operations=OPERATIONS,
                      max_message_bytes=10 * 1024 * 1024)
    assert fragment in str(caught.value)
    assert caught.value.stage == 'parse'


def _padded(size: int) -> bytes:
    base = doc(pad='').encode()
    value = doc(pad='x' * (size - len(base))).encode()
    assert len(value) == size
    return value


@pytest.mark.parametrize('size, limit, accepted', [
    (100, 100, True),
    (101, 100, False),
    (99, 100, True),
    (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES, True),
    (DEFAULT_MAX_MESSAGE_BYTES + 1, DEFAULT_MAX_MESSAGE_BYTES, False),
])
def test_parse_message_size_limit(size, limit, accepted):
    source = record(_padded(size))
    if accepted:
        assert parse_message(source, operations=OPERATIONS, max_message_bytes=limit).tsc_key == (
            'c1', 't1')
    else:
        with pytest.raises(InvalidMessageError, match=f'{size} bytes, over the limit of {limit}'):
            parse_message(source, operations=OPERATIONS, max_message_bytes=limit)


def test_parse_message_default_limit_applies():
    with pytest.raises(InvalidMessageError, match='over the limit'):
        parse_message(record(_padded(DEFAULT_MAX_MESSAGE_BYTES + 1)), operations=OPERATIONS)


def test_parse_message_size_checked_before_decoding():
    # Oversized and undecodable: the size rule is reported, without decoding the bytes.
    with pytest.raises(InvalidMessageError, match='over the limit'):
        parse_message(record(b'\xff' * 11), operations=OPERATIONS, max_message_bytes=10)


def test_parse_message_rejects_non_bytes_value():
    source = SourceRecord(value='{"a": 1}', key=None, topic='t', partition=0, offset=0)
    with pytest.raises(InvalidMessageError, match='must be bytes'):
        parse_message(source, operations=OPERATIONS)


def test_parse_message_only_accepts_given_operations():
    with pytest.raises(InvalidMessageError, match="unknown operation 'delete'"):
        parse_message(record(doc(operation='delete')), operations=('create', 'update'))


# --- ParseMessages in a pipeline -------------------------------------------------------------

GOOD_RECORDS = [
    record(doc(operation='Create'), key=b'c1/t1', topic='orders', partition=0, offset=0),
    record(doc(operation='delete', customerId="x' OR '1'='1", tscId='../..'), key=None,
           topic='orders', partition=1, offset=5),
    record(doc(operation='update', extra=[1]), key=b'\xff\xfe', topic='other', partition=2,
           offset=9),
]

BAD_RECORDS = [
    # (record, expected dlq.error.message fragment)
    (record(b'{oops', key=b'k1', topic='orders', partition=0, offset=1), 'not valid JSON'),
    (record(b'[1, 2]', key=None, topic='orders', partition=0, offset=2), 'JSON array'),
    (record(b'\xff\xfe\x00bad', key=b'\x00\x01', topic='orders', partition=3, offset=3),
     'not valid UTF-8'),
    (record(doc(tscId=''), key=b'k4', topic='orders', partition=0, offset=4), 'must not be empty'),
    (record(doc(operation='purge'), key=b'k5', topic='other', partition=7, offset=123456789012),
     "unknown operation 'purge'"),
    (record(_padded(300), key=b'k6', topic='orders', partition=0, offset=6), 'over the limit'),
]


def _check_dead_letters(expected):
    """A matcher: one dead letter per bad record, original bytes, full parse context."""
    by_position = {(r.topic, r.partition, r.offset): (r, fragment) for r, fragment in expected}

    def check(actual):
        assert len(actual) == len(expected), actual
        seen = set()
        for letter in actual:
            position = (letter.header(HEADER_SOURCE_TOPIC).decode(),
                        int(letter.header(HEADER_SOURCE_PARTITION)),
                        int(letter.header(HEADER_SOURCE_OFFSET)))
            source, fragment = by_position[position]
            seen.add(position)
            assert letter.key == source.key
            assert letter.value == source.value
            assert letter.header(HEADER_STAGE) == b'parse'
            assert letter.header(HEADER_ERROR_CLASS) == b'InvalidMessageError'
            assert fragment in letter.header(HEADER_ERROR_MESSAGE).decode()
            assert letter.header(HEADER_ATTEMPTS) is None
            failed_at = datetime.datetime.fromisoformat(letter.header(HEADER_FAILED_AT).decode())
            assert failed_at.tzinfo is not None
            assert abs(datetime.datetime.now(datetime.UTC) - failed_at) < datetime.timedelta(
                hours=1)
            names = [name for name, _ in letter.headers]
            assert len(names) == len(set(names)), names
        assert seen == set(by_position)

    return check


def test_parse_messages_splits_good_and_dead_letters():
    records = [r for r, _ in BAD_RECORDS[:3]] + GOOD_RECORDS + [r for r, _ in BAD_RECORDS[3:]]
    pipeline = TestPipeline(runner='FnApiRunner')
    result = (pipeline
              | beam.Create(records)
              | ParseMessages(['CREATE', 'Update', 'delete'], max_message_bytes=299))

    assert_that(
        result['messages'] | 'Summarize' >> beam.Map(
            lambda m: (m.operation, m.customer_id, m.tsc_id, m.source.topic,
                       m.source.partition, m.source.offset, m.source.key, m.text)),
        equal_to([
            ('create', 'c1', 't1', 'orders', 0, 0, b'c1/t1', GOOD_RECORDS[0].value.decode()),
            ('delete', "x' OR '1'='1", '../..', 'orders', 1, 5, None,
             GOOD_RECORDS[1].value.decode()),
            ('update', 'c1', 't1', 'other', 2, 9, b'\xff\xfe', GOOD_RECORDS[2].value.decode()),
        ]),
        label='messages')
    assert_that(result['dead_letters'], _check_dead_letters(BAD_RECORDS), label='dead_letters')
    assert_that(result[ParseMessages.DEAD_LETTERS] | 'Count' >> beam.combiners.Count.Globally(),
                equal_to([len(BAD_RECORDS)]), label='dead_letter_count')

    outcome = pipeline.run()
    outcome.wait_until_finish()
    counters = {c.key.metric.name: c.committed
                for c in outcome.metrics().query(MetricsFilter())['counters']}
    assert counters['read'] == len(records)
    assert counters['parsed'] == len(GOOD_RECORDS)
    assert counters['invalid'] == len(BAD_RECORDS)
    assert counters['dead_letters_parse'] == len(BAD_RECORDS)


def test_parse_messages_empty_input():
    with TestPipeline(runner='FnApiRunner') as pipeline:
        result = (pipeline | beam.Create([], reshuffle=False).with_output_types(SourceRecord)
                  | ParseMessages(OPERATIONS))
        assert_that(result['messages'], equal_to([]), label='messages')
        assert_that(result['dead_letters'], equal_to([]), label='dead_letters')


@pytest.mark.parametrize('kwargs, fragment', [
    ({'operations': OPERATIONS, 'max_message_bytes': 0}, 'max_message_bytes'),
    ({'operations': OPERATIONS, 'max_message_bytes': -1}, 'max_message_bytes'),
    ({'operations': ()}, 'operations'),
    ({'operations': []}, 'operations'),
])
def test_parse_messages_construction_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ParseMessages(**kwargs)
