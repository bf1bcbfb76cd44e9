"""Parse and validate stage: raw message bytes become a ``Message`` or a dead letter."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.dead_letters import StageError, dead_letter
from transforms.records import Message, SourceRecord

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
REQUIRED_FIELDS = ('operation', 'customerId', 'tscId')


class InvalidMessageError(StageError):
    """The message is not a well-formed orchestrator request."""

    stage = 'parse'


def parse_message(
    record: SourceRecord,
    *,
    operations: Collection[str],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Message:
    """Converts the binary message to a ``Message`` after checking its required fields.

    Args:
        record: The source record; its value must be a UTF-8 JSON object.
        operations: The accepted operations, lower case (the keys of ``OPERATION_HANDLERS``).
        max_message_bytes: Larger values are rejected before decoding.

    Raises:
        InvalidMessageError: with a message that says which rule the input broke.
    """
    value = record.value
    if not isinstance(value, (bytes, bytearray)):
        raise InvalidMessageError(f'message value must be bytes, got {type(value).__name__}')
    if len(value) > max_message_bytes:
        raise InvalidMessageError(
            f'message is {len(value)} bytes, over the limit of {max_message_bytes} bytes')
    try:
        text = bytes(value).decode('utf-8')
    except UnicodeDecodeError as e:
        raise InvalidMessageError(
            f'message is not valid UTF-8: {e.reason} at byte {e.start}') from e
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidMessageError(f'message is not valid JSON: {e.msg} at line {e.lineno} '
                                  f'column {e.colno}') from e
    except RecursionError as e:
        raise InvalidMessageError('message is not valid JSON: nested too deeply') from e
    if not isinstance(payload, dict):
        raise InvalidMessageError(
            f'message must be a JSON object, got a JSON {_json_type(payload)}')
    fields = {}
    for name in REQUIRED_FIELDS:
        if name not in payload:
            raise InvalidMessageError(f'required field {name!r} is missing')
        field = payload[name]
        if not isinstance(field, str):
            raise InvalidMessageError(
                f'field {name!r} must be a string, got a JSON {_json_type(field)}')
        if not field.strip():
            raise InvalidMessageError(f'field {name!r} must not be empty')
        try:
            field.encode('utf-8')
        except UnicodeEncodeError as e:
            # A JSON escape like "\ud800" decodes to a lone surrogate, which no later
            # stage (URL, SQL, headers) can encode.
            raise InvalidMessageError(
                f'field {name!r} is not valid Unicode: lone surrogate at index {e.start}') from e
        fields[name] = field
    operation = fields['operation'].strip().lower()
    if operation not in operations:
        raise InvalidMessageError(
            f'unknown operation {fields["operation"]!r}; expected one of {sorted(operations)}')
    return Message(
        source=record,
        operation=operation,
        customer_id=fields['customerId'],
        tsc_id=fields['tscId'],
        payload=payload,
        text=text,
    )


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return 'object'
    if isinstance(value, list):
        return 'array'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, bool):
        return 'boolean'
    if value is None:
        return 'null'
    return 'number'


class _ParseMessageFn(beam.DoFn):
    """Parses one source record; a bad one goes to the dead-letter output."""

    def __init__(self, operations: Collection[str], max_message_bytes: int):
        self._operations = frozenset(operations)
        self._max_message_bytes = max_message_bytes
        self._read = Metrics.counter('orchestrator', 'read')
        self._parsed = Metrics.counter('orchestrator', 'parsed')
        self._invalid = Metrics.counter('orchestrator', 'invalid')
        self._dead = Metrics.counter('orchestrator', 'dead_letters_parse')

    def process(self, record: SourceRecord):
        self._read.inc()
        try:
            message = parse_message(
                record, operations=self._operations, max_message_bytes=self._max_message_bytes)
        except InvalidMessageError as e:
            self._invalid.inc()
            self._dead.inc()
            _LOGGER.debug('dead letter at parse for %s:%s@%s: %s',
                          record.topic, record.partition, record.offset, e)
            yield beam.pvalue.TaggedOutput(
                ParseMessages.DEAD_LETTERS, dead_letter(record, 'parse', e))
            return
        self._parsed.inc()
        yield message


class ParseMessages(beam.PTransform):
    """Parses and validates source records.

    Takes a PCollection of ``SourceRecord`` and returns a tagged result: the main
    output holds ``Message`` objects, ``dead_letters`` holds ``KafkaRecord`` dead
    letters at stage ``parse``. Nothing in this stage raises past the DoFn.

    Args:
        operations: Accepted operations (lower case).
        max_message_bytes: Upper bound on a message's size.
    """

    DEAD_LETTERS = 'dead_letters'

    def __init__(self, operations: Collection[str],
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        super().__init__()
        if max_message_bytes <= 0:
            raise ValueError(f'max_message_bytes must be positive, got {max_message_bytes}')
        if not operations:
            raise ValueError('operations must not be empty')
        self._operations = tuple(sorted(op.lower() for op in operations))
        self._max_message_bytes = max_message_bytes

    def expand(self, records):
        return records | 'ParseMessage' >> beam.ParDo(
            _ParseMessageFn(self._operations, self._max_message_bytes)).with_outputs(
                self.DEAD_LETTERS, main='messages')
