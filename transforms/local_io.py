"""Local IO at the pipeline's edges: a message file as source records, JSON Lines record sinks."""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

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


def concatenate_parts(parts: list[str], path: str, directory: str | None = None) -> str:
    """Joins the part files into ``path`` (replacing it), then removes them.

    ``directory``, when given, is removed too, with any part a retried bundle left there.
    """
    temporary = f'{path}.tmp-{uuid.uuid4().hex}'
    with open(temporary, 'wb') as target:
        for part in sorted(parts):
            with open(part, 'rb') as source:
                shutil.copyfileobj(source, target)
    os.replace(temporary, path)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        for part in parts:
            os.remove(part)
    return path


class _WritePartFn(beam.DoFn):
    """Appends each bundle's records to a part file of its own; emits the part's name."""

    def __init__(self, directory: str):
        self._directory = directory
        self._handle = None
        self._name = None

    def start_bundle(self):
        self._handle = None
        self._name = None

    def process(self, record: KafkaRecord):
        if self._handle is None:
            os.makedirs(self._directory, exist_ok=True)
            self._name = os.path.join(self._directory, f'{uuid.uuid4().hex}.jsonl')
            self._handle = open(self._name, 'w', encoding='utf-8')  # noqa: SIM115
        self._handle.write(record_to_json(record) + '\n')

    def finish_bundle(self):
        if self._handle is not None:
            self._handle.close()
            # Only parts of bundles that committed are named downstream; a retried
            # bundle's orphan is removed with the directory.
            yield WindowedValue(self._name, MIN_TIMESTAMP, [GlobalWindow()])


class WriteRecordsJsonl(beam.PTransform):
    """Writes ``KafkaRecord`` objects to exactly ``path``, one JSON object per line.

    Takes one PCollection or a tuple of them. Each bundle writes a part file, and the
    parts are joined into ``path`` in one last step: a single Beam shard, or a Flatten
    of the inputs, would hold every line in memory on the in-process runner.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, records):
        inputs = records if isinstance(records, (tuple, list)) else (records,)
        parts = f'{self._path}.parts-{uuid.uuid4().hex[:8]}'
        names = tuple(pcoll | f'WriteParts{index}' >> beam.ParDo(_WritePartFn(parts))
                      for index, pcoll in enumerate(inputs))
        return (names
                | 'PartNames' >> beam.Flatten()
                | 'AllParts' >> beam.combiners.ToList()
                | 'Concatenate' >> beam.Map(concatenate_parts, self._path, parts))
