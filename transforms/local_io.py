"""Local IO at the pipeline's edges: a message file as source records, JSON Lines record sinks."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from transforms.records import KafkaRecord, SourceRecord


def read_message_lines(path: str) -> Iterator[SourceRecord]:
    """Yields one source record per line, undecoded: topic is the path, offset the line number."""
    with open(path, 'rb') as handle:
        for number, line in enumerate(handle):
            if line.endswith(b'\n'):
                line = line[:-1]
                if line.endswith(b'\r'):
                    line = line[:-1]
            yield SourceRecord(value=line, key=None, topic=path, partition=0, offset=number)


class ReadMessageFile(beam.PTransform):
    """Reads a file of one message per line as ``SourceRecord`` objects, in order.

    No shuffle follows the read: on the in-process runner the lines stream through
    the fused stages one bundle at a time, so memory does not grow with the file.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, pipeline):
        return (pipeline
                | 'Path' >> beam.Create([self._path])
                | 'ReadLines' >> beam.FlatMap(read_message_lines))


def _text_field(name: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {name: None}
    try:
        return {name: data.decode('utf-8')}
    except UnicodeDecodeError:
        return {f'{name}Base64': base64.b64encode(data).decode('ascii')}


def record_to_json(record: KafkaRecord) -> str:
    """One JSON Lines object mirroring the Kafka record.

    ``{"key": str|null, "value": str, "headers": {str: str}}``; ``valueBase64`` (or
    ``keyBase64``) replaces the field when the bytes are not UTF-8.
    """
    document: dict[str, Any] = {}
    document.update(_text_field('key', record.key))
    document.update(_text_field('value', record.value))
    document['headers'] = {name: value.decode('utf-8', 'backslashreplace')
                           for name, value in record.headers}
    return json.dumps(document, ensure_ascii=False, sort_keys=False)


def record_from_json(line: str) -> KafkaRecord:
    """Inverse of ``record_to_json``."""
    document = json.loads(line)
    key = document.get('key')
    key = key.encode('utf-8') if key is not None else (
        base64.b64decode(document['keyBase64']) if 'keyBase64' in document else None)
    value = (document['value'].encode('utf-8') if 'value' in document
             else base64.b64decode(document['valueBase64']))
    headers = tuple((name, text.encode('utf-8')) for name, text in document['headers'].items())
    return KafkaRecord(key=key, value=value, headers=headers)


def concatenate_parts(parts: list[str], path: str) -> str:
    """Joins the shard files ``parts`` into ``path`` (replacing it) and removes them."""
    temporary = f'{path}.tmp-{uuid.uuid4().hex}'
    with open(temporary, 'wb') as target:
        for part in sorted(parts):
            with open(part, 'rb') as source:
                shutil.copyfileobj(source, target)
    os.replace(temporary, path)
    for part in parts:
        os.remove(part)
    directories = {os.path.dirname(part) for part in parts}
    for directory in directories:
        with contextlib.suppress(OSError):
            os.rmdir(directory)
    return path


class WriteRecordsJsonl(beam.PTransform):
    """Writes ``KafkaRecord`` objects to exactly ``path``, one JSON object per line.

    Takes one PCollection or a tuple of them. The lines go to runner-sharded part
    files first, then into ``path`` in one step: asking Beam for a single shard, or
    flattening the inputs, would hold every line in memory on the in-process runner.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, records):
        inputs = records if isinstance(records, (tuple, list)) else (records,)
        parts = f'{self._path}.parts-{uuid.uuid4().hex[:8]}'
        names = tuple(
            pcoll
            | f'ToJson{index}' >> beam.Map(record_to_json)
            | f'WriteParts{index}' >> beam.io.WriteToText(
                f'{parts}/input{index:02d}', file_name_suffix='.jsonl')
            for index, pcoll in enumerate(inputs))
        return (names
                | 'PartNames' >> beam.Flatten()
                | 'AllParts' >> beam.combiners.ToList()
                | 'Concatenate' >> beam.Map(concatenate_parts, self._path))
