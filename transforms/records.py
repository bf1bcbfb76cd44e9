"""Record types shared by the stages: source records, Kafka-shaped output records, messages."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, NamedTuple

Headers = tuple[tuple[str, bytes], ...]


class SourceRecord(NamedTuple):
    """One input record, as read from Kafka or from a local file.

    Attributes:
        value: The raw message bytes, never decoded by the source.
        key: The Kafka record key, or None.
        topic: Source topic (the file path in local mode).
        partition: Source partition (0 in local mode).
        offset: Source offset (the 0-based line number in local mode).
        headers: Kafka headers of the source record.
        timestamp_ms: Producer/broker timestamp in epoch milliseconds, when known.
    """

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int
    headers: Headers = ()
    timestamp_ms: int | None = None

    @property
    def position(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


class KafkaRecord(NamedTuple):
    """An output record shaped like a Kafka producer record (job records, dead letters)."""

    key: bytes | None
    value: bytes
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        """Returns the last value of header ``name``, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


@dataclasses.dataclass
class Message:
    """A parsed message travelling through the stages.

    Stages fill the later fields in: ``config`` and ``cron_schedule`` (enrich),
    ``job`` (render), ``superseded`` (upsert: a later message for the same key won).
    """

    source: SourceRecord
    operation: str
    customer_id: str
    tsc_id: str
    payload: dict[str, Any]
    text: str
    config: dict[str, Any] | None = None
    cron_schedule: str | None = None
    job: KafkaRecord | None = None
    superseded: bool = False

    @property
    def tsc_key(self) -> tuple[str, str]:
        return (self.customer_id, self.tsc_id)

    @property
    def order(self) -> tuple[str, int, int]:
        """Position used for last-write-wins within one topic/partition."""
        return self.source.position


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def format_timestamp(moment: datetime.datetime) -> str:
    """Formats a UTC timestamp the way both warehouse dialects read it."""
    return moment.astimezone(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S.%f')
