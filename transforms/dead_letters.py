"""Dead letters: the failed source record's key and bytes, with the failure context in headers."""

from __future__ import annotations

import datetime

from transforms.records import KafkaRecord, SourceRecord, utc_now

STAGES = ('parse', 'validate', 'enrich', 'upsert', 'render', 'publish', 'archive')

HEADER_STAGE = 'dlq.stage'
HEADER_ERROR_CLASS = 'dlq.error.class'
HEADER_ERROR_MESSAGE = 'dlq.error.message'
HEADER_SOURCE_TOPIC = 'dlq.source.topic'
HEADER_SOURCE_PARTITION = 'dlq.source.partition'
HEADER_SOURCE_OFFSET = 'dlq.source.offset'
HEADER_ATTEMPTS = 'dlq.attempts'
HEADER_FAILED_AT = 'dlq.failed.at'

# Long enough for any message of ours, short enough to keep a header small.
_MAX_ERROR_MESSAGE_CHARS = 2000


class StageError(Exception):
    """A failure that sends a message to the dead letters.

    Attributes:
        stage: One of ``STAGES``.
        attempts: How many attempts were made, when the stage retried.
    """

    stage = 'parse'

    def __init__(self, message: str, *, attempts: int | None = None):
        super().__init__(message)
        self.attempts = attempts


def dead_letter(
    source: SourceRecord,
    stage: str,
    error: BaseException,
    *,
    attempts: int | None = None,
    failed_at: datetime.datetime | None = None,
) -> KafkaRecord:
    """Builds the dead letter of ``source`` for a failure at ``stage``.

    The record keeps the source key and value bytes untouched, like Kafka
    Connect's DLQ, and says where and why it failed in ``dlq.*`` headers.
    """
    if attempts is None:
        attempts = getattr(error, 'attempts', None)
    return _dead_letter(source, stage, type(error).__name__, str(error) or type(error).__name__,
                        attempts=attempts, failed_at=failed_at)


def _dead_letter(source: SourceRecord, stage: str, error_class: str, message: str, *,
                 attempts: int | None = None,
                 failed_at: datetime.datetime | None = None) -> KafkaRecord:
    if stage not in STAGES:
        raise ValueError(f'unknown dead-letter stage {stage!r}; expected one of {STAGES}')
    if len(message) > _MAX_ERROR_MESSAGE_CHARS:
        message = message[:_MAX_ERROR_MESSAGE_CHARS] + '…'
    moment = failed_at or utc_now()
    headers = [
        (HEADER_STAGE, stage.encode()),
        (HEADER_ERROR_CLASS, error_class.encode()),
        (HEADER_ERROR_MESSAGE, message.encode('utf-8', 'backslashreplace')),
        (HEADER_SOURCE_TOPIC, source.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(source.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(source.offset).encode()),
    ]
    if attempts is not None:
        headers.append((HEADER_ATTEMPTS, str(attempts).encode()))
    headers.append((HEADER_FAILED_AT, moment.isoformat(timespec='milliseconds').encode()))
    return KafkaRecord(key=source.key, value=source.value, headers=tuple(headers))


def dead_letter_stage(record: KafkaRecord) -> str | None:
    """Returns the stage a dead letter failed at."""
    value = record.header(HEADER_STAGE)
    return value.decode() if value is not None else None


def unexpected_failure_dead_letters(stage: str):
    """Returns a function turning ``with_exception_handling`` failures into dead letters.

    The failed element may be a ``SourceRecord``, a ``Message`` or a batch (list)
    of messages; every source record it carries gets its own dead letter, so a
    bug in a stage never loses a message nor crashes the job.
    """

    def to_dead_letters(failure):
        # Beam hands over (element, (exception type, repr of the exception, traceback)).
        element, (error_type, error_repr, _) = failure
        items = element if isinstance(element, list) else [element]
        for item in items:
            source = item if isinstance(item, SourceRecord) else item.source
            yield _dead_letter(source, stage, getattr(error_type, '__name__', str(error_type)),
                               f'unexpected error: {error_repr}')

    return to_dead_letters


def with_safety_net(batches, label: str, stage: str, main: str, fn, *extra_tags: str) -> dict:
    """Applies ``fn`` so that an unexpected exception dead-letters its batch instead of
    crashing the job.

    ``fn`` yields its main output and ``dead_letters`` (plus ``extra_tags``); an
    exception it did not route itself sends every message of the failed batch to the
    dead letters at ``stage``, and none of that batch's outputs are emitted.

    Returns:
        The outputs by tag: ``main``, ``dead_letters`` (the ones ``fn`` routed),
        ``failed`` (the dead letters of unexpected failures) and each of ``extra_tags``.
        The two dead-letter outputs stay apart: the in-process runner would hold every
        element of a Flatten in memory.
    """
    import apache_beam as beam

    result = batches | label >> beam.ParDo(fn).with_exception_handling(
        main_tag=main, dead_letter_tag='failed', exc_class=Exception)
    failed = result['failed'] | f'{label}FailuresToDeadLetters' >> beam.FlatMap(
        unexpected_failure_dead_letters(stage))
    outputs = {main: result[main], 'dead_letters': result['dead_letters'], 'failed': failed}
    for tag in extra_tags:
        outputs[tag] = result[tag]
    return outputs
