"""Kafka IO at the pipeline's edges: the orchestrator topic in, job records and dead letters out."""

import logging
import typing
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka

from transforms.records import KafkaRecord, SourceRecord

_LOGGER = logging.getLogger(__name__)


# No "from __future__ import annotations" here: Beam infers the row schema of these
# NamedTuples from their runtime annotations.
class KafkaHeader(typing.NamedTuple):
    key: str
    value: bytes


class KafkaWriteRow(typing.NamedTuple):
    """The row ``WriteToKafka(with_headers=True)`` takes (byte-array serializers)."""

    key: typing.Optional[bytes]  # noqa: UP045 - Beam reads Optional as a nullable field
    value: bytes
    headers: list[KafkaHeader]


beam.coders.registry.register_coder(KafkaHeader, beam.coders.RowCoder)
beam.coders.registry.register_coder(KafkaWriteRow, beam.coders.RowCoder)


def source_record_from_kafka(row: Any) -> SourceRecord:
    """Turns a ``ReadFromKafka(with_metadata=True)`` row into a ``SourceRecord``."""
    headers = tuple((header.key, bytes(header.value) if header.value is not None else b'')
                    for header in (row.headers or ()))
    return SourceRecord(
        value=bytes(row.value) if row.value is not None else b'',
        key=bytes(row.key) if row.key is not None else None,
        topic=row.topic, partition=int(row.partition), offset=int(row.offset),
        headers=headers, timestamp_ms=int(row.timestamp) if row.timestamp is not None else None)


def kafka_write_row(record: KafkaRecord) -> KafkaWriteRow:
    """Turns a job record or dead letter into the row ``WriteToKafka`` writes."""
    return KafkaWriteRow(key=record.key, value=record.value,
                         headers=[KafkaHeader(name, value) for name, value in record.headers])


class ReadOrchestratorTopic(beam.PTransform):
    """Reads the orchestrator topic with metadata as ``SourceRecord`` objects.

    Offsets are committed to the consumer group when the runner finalizes the
    bundles that read them (``commit_offset_in_finalize``), never automatically, so
    a record is committed only after the pipeline has checkpointed it.

    Args:
        consumer_config: Kafka consumer properties (bootstrap servers, security).
        topic: The orchestrator topic.
        consumer_group: ``group.id``.
        auto_offset_reset: Where a group without committed offsets starts.
        expansion_service: Address of the Java expansion service with KafkaIO.
        max_num_records: Bounded read: stop after this many records.
        max_read_time_seconds: Bounded read: stop after this long.
    """

    def __init__(self, consumer_config: Mapping[str, str], topic: str, *, consumer_group: str,
                 auto_offset_reset: str = 'earliest', expansion_service: str,
                 max_num_records: int | None = None,
                 max_read_time_seconds: int | None = None):
        super().__init__()
        self._config = {**consumer_config, 'group.id': consumer_group,
                        'auto.offset.reset': auto_offset_reset, 'enable.auto.commit': 'false'}
        self._topic = topic
        self._expansion_service = expansion_service
        self._max_num_records = max_num_records
        self._max_read_time = max_read_time_seconds

    def expand(self, pbegin):
        return (pbegin
                | 'ReadFromKafka' >> ReadFromKafka(
                    consumer_config=self._config, topics=[self._topic], with_metadata=True,
                    commit_offset_in_finalize=True, max_num_records=self._max_num_records,
                    max_read_time=self._max_read_time,
                    expansion_service=self._expansion_service)
                | 'ToSourceRecords' >> beam.Map(source_record_from_kafka))


class WriteKafkaRecords(beam.PTransform):
    """Writes ``KafkaRecord`` objects (key, value, headers) to a topic.

    Args:
        producer_config: Kafka producer properties (bootstrap servers, security).
        topic: Destination topic.
        expansion_service: Address of the Java expansion service with KafkaIO.
    """

    def __init__(self, producer_config: Mapping[str, str], topic: str, *,
                 expansion_service: str):
        super().__init__()
        # Idempotent, fully acknowledged produce: a retried send never duplicates a record.
        self._config = {'acks': 'all', 'enable.idempotence': 'true', **producer_config}
        self._topic = topic
        self._expansion_service = expansion_service

    def expand(self, records):
        return (records
                | 'ToKafkaRows' >> beam.Map(kafka_write_row).with_output_types(KafkaWriteRow)
                | 'WriteToKafka' >> WriteToKafka(
                    producer_config=self._config, topic=self._topic, with_headers=True,
                    expansion_service=self._expansion_service))
