"""Tests for transforms.local_io: the message-file source and the JSON Lines record sink."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.local_io import (
    ReadMessageFile,
    WriteRecordsJsonl,
    read_message_lines,
    record_from_json,
    record_to_json,
)
from transforms.records import KafkaRecord, SourceRecord


def write_bytes(directory, name: str, content: bytes) -> str:
    path = os.path.join(str(directory), name)
    with open(path, 'wb') as handle:
        handle.write(content)
    return path


# --- read_message_lines ---------------------------------------------------------------------

@pytest.mark.parametrize('content, values', [
    (b'', []),
    (b'\n', [b'']),
    (b'one', [b'one']),
    (b'one\n', [b'one']),
    (b'one\ntwo', [b'one', b'two']),
    (b'one\r\ntwo\r\n', [b'one', b'two']),
    (b'one\r\ntwo', [b'one', b'two']),
    (b'a\n\nb\n\n', [b'a', b'', b'b', b'']),
    (b'\r\n\r\n', [b'', b'']),
    (b'  \t \n', [b'  \t ']),
    (b'a\rb\n', [b'a\rb']),  # a lone CR is no line break
    (b'a\r\r\n', [b'a\r']),
    (b'\xff\xfe\n\xc3(\r\nok', [b'\xff\xfe', b'\xc3(', b'ok']),
    (b'nul\x00byte\n', [b'nul\x00byte']),
    ('ünïcode – “quotes”\n'.encode(), ['ünïcode – “quotes”'.encode()]),
])
def test_read_message_lines(tmp_path, content, values):
    path = write_bytes(tmp_path, 'messages.jsonl', content)

    records = list(read_message_lines(path))

    assert [r.value for r in records] == values
    assert [r.offset for r in records] == list(range(len(values)))
    assert all(isinstance(r, SourceRecord) for r in records)
    assert all((r.topic, r.partition, r.key, r.headers) == (path, 0, None, ()) for r in records)


def test_read_message_lines_long_line(tmp_path):
    long_line = b'x' * (3 * 1024 * 1024)
    path = write_bytes(tmp_path, 'big.jsonl', b'a\n' + long_line + b'\nb')

    assert [len(r.value) for r in read_message_lines(path)] == [1, len(long_line), 1]


# --- record_to_json / record_from_json ------------------------------------------------------

RECORDS = [
    (KafkaRecord(key=b'ns/name', value=b'apiVersion: batch/v1\n', headers=(('action', b'apply'),)),
     {'key': 'ns/name', 'value': 'apiVersion: batch/v1\n', 'headers': {'action': 'apply'}}),
    (KafkaRecord(key=None, value=b'{"a": 1}', headers=()),
     {'key': None, 'value': '{"a": 1}', 'headers': {}}),
    (KafkaRecord(key=None, value=b'\xff\xfe\x00bad'),
     {'key': None, 'valueBase64': '//4AYmFk', 'headers': {}}),
    (KafkaRecord(key=b'\x80k', value=b'v', headers=(('h', b'1'), ('g', b'2'))),
     {'keyBase64': 'gGs=', 'value': 'v', 'headers': {'h': '1', 'g': '2'}}),
    (KafkaRecord(key=b'', value=b''), {'key': '', 'value': '', 'headers': {}}),
    (KafkaRecord(key='clé'.encode(), value='日本\u2028\r\n"'.encode(),
                 headers=(('dlq.error.message', 'ünï'.encode()),)),
     {'key': 'clé', 'value': '日本\u2028\r\n"', 'headers': {'dlq.error.message': 'ünï'}}),
]


@pytest.mark.parametrize('record, document', RECORDS)
def test_record_to_json(record, document):
    line = record_to_json(record)

    assert '\n' not in line and '\r' not in line
    assert json.loads(line) == document
    assert list(json.loads(line)) == list(document)  # key, value, headers in this order


@pytest.mark.parametrize('record', [r for r, _ in RECORDS])
def test_record_json_round_trip(record):
    assert record_from_json(record_to_json(record)) == record


def test_record_to_json_keeps_non_ascii_readable():
    line = record_to_json(KafkaRecord(key=None, value='ü'.encode()))
    assert 'ü' in line


def test_record_to_json_header_bytes_that_are_not_utf8_are_escaped():
    line = record_to_json(KafkaRecord(key=None, value=b'v', headers=(('h', b'a\xffb'),)))
    assert json.loads(line)['headers'] == {'h': 'a\\xffb'}


# --- ReadMessageFile and WriteRecordsJsonl in a pipeline ------------------------------------

def test_read_and_write_in_a_pipeline(tmp_path):
    input_path = write_bytes(tmp_path, 'in.txt', b'{"a": 1}\r\n\n\xff bad\nlast')
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    jobs_path = str(out_dir / 'jobs.jsonl')
    empty_path = str(out_dir / 'dead_letters.jsonl')
    expected_records = [
        SourceRecord(b'{"a": 1}', None, input_path, 0, 0),
        SourceRecord(b'', None, input_path, 0, 1),
        SourceRecord(b'\xff bad', None, input_path, 0, 2),
        SourceRecord(b'last', None, input_path, 0, 3),
    ]
    written = [KafkaRecord(key=f'k{r.offset}'.encode() if r.offset else None, value=r.value,
                           headers=(('offset', str(r.offset).encode()),))
               for r in expected_records]

    with TestPipeline(runner='FnApiRunner') as pipeline:
        records = pipeline | ReadMessageFile(input_path)
        assert_that(records, equal_to(expected_records), label='records')
        _ = (records
             | 'ToKafka' >> beam.Map(lambda r: KafkaRecord(
                 key=f'k{r.offset}'.encode() if r.offset else None, value=r.value,
                 headers=(('offset', str(r.offset).encode()),)))
             | 'WriteJobs' >> WriteRecordsJsonl(jobs_path))
        _ = (records
             | 'NoDeadLetters' >> beam.Filter(lambda r: False)
             | 'ToNothing' >> beam.Map(lambda r: KafkaRecord(key=None, value=r.value))
             | 'WriteDeadLetters' >> WriteRecordsJsonl(empty_path))

    # Exactly the paths given: no shard suffix, no temporary files left behind.
    assert sorted(os.listdir(out_dir)) == ['dead_letters.jsonl', 'jobs.jsonl']
    with open(jobs_path, encoding='utf-8') as handle:
        content = handle.read()
    assert content.endswith('\n')
    lines = content[:-1].split('\n')
    assert sorted(map(record_from_json, lines), key=repr) == sorted(written, key=repr)
    assert sum('valueBase64' in json.loads(line) for line in lines) == 1
    assert os.path.getsize(empty_path) == 0


def test_write_records_jsonl_empty_pcollection_still_writes_the_file(tmp_path):
    path = str(tmp_path / 'nothing.jsonl')

    with TestPipeline(runner='FnApiRunner') as pipeline:
        _ = (pipeline
             | beam.Create([], reshuffle=False).with_output_types(KafkaRecord)
             | WriteRecordsJsonl(path))

    assert os.listdir(tmp_path) == ['nothing.jsonl']
    assert os.path.getsize(path) == 0


def test_write_records_jsonl_overwrites_existing_file(tmp_path):
    path = str(tmp_path / 'out.jsonl')
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write('stale line from an earlier run\n')
    record = KafkaRecord(key=b'k', value=b'v', headers=(('a', b'b'),))

    with TestPipeline(runner='FnApiRunner') as pipeline:
        _ = pipeline | beam.Create([record]) | WriteRecordsJsonl(path)

    with open(path, encoding='utf-8') as handle:
        assert handle.read() == record_to_json(record) + '\n'
