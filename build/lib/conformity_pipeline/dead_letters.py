"""Reading the dead-letter topic, and sending its records back to the checks topic.

How this stays simple and loses nothing:

- The dead-letter topic is read without a consumer group, from its first retained record to the
  end it had when reading began. Nothing is committed and nothing is removed: Kafka's retention
  alone decides when a dead letter disappears, so listing is always complete.
- A replay publishes each chosen record to the checks topic with ``acks=all`` and waits for the
  broker's acknowledgement of each before it counts as replayed. The record keeps its key (so it
  lands on its account's partition), its exact body and the edge's headers; the dead-letter
  headers are dropped.
- Every consumer is idempotent on the edge's event id, so a record replayed twice (by running
  the command twice, or one dead-lettered by two consumers) is stored once. A replay therefore
  sends each event id once per run, and running it again is harmless.
"""

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from conformity_pipeline.errors import DependencyError
from conformity_pipeline.settings import Settings
from conformity_pipeline.topics import Header

logger = logging.getLogger(__name__)

# Headers that describe the dead-lettering itself; a replayed record goes without them.
DEAD_LETTER_HEADERS = frozenset(
    {
        Header.DEAD_LETTER_REASON.value,
        Header.DEAD_LETTER_CONSUMER.value,
        Header.ORIGINAL_TOPIC.value,
        Header.ORIGINAL_PARTITION.value,
        Header.ORIGINAL_OFFSET.value,
    }
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record on the dead-letter topic, with its position there."""

    partition: int
    offset: int
    key: bytes | None
    body: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: Header) -> str | None:
        """The header's value as text, or None when the record lacks it."""
        for key, value in self.headers:
            if key == name.value:
                return value.decode("utf-8", "replace")
        return None

    @property
    def event_id(self) -> str | None:
        """The edge's event id; None for a record the edge never wrote."""
        return self.header(Header.EVENT_ID)

    @property
    def origin(self) -> str:
        """Where it was read before it was dead-lettered: ``topic[partition]@offset``."""
        topic = self.header(Header.ORIGINAL_TOPIC) or "?"
        partition = self.header(Header.ORIGINAL_PARTITION) or "?"
        offset = self.header(Header.ORIGINAL_OFFSET) or "?"
        return f"{topic}[{partition}]@{offset}"

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The headers to replay with: the edge's, without the dead-letter ones."""
        return [(key, value) for key, value in self.headers if key not in DEAD_LETTER_HEADERS]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay did: records sent back (acknowledged) and records left, with the reason."""

    replayed: list[DeadLetter]
    skipped: list[tuple[DeadLetter, str]]


def read_dead_letters(settings: Settings, timeout: float = 30.0) -> list[DeadLetter]:
    """Every record now on the dead-letter topic, in partition then offset order.

    Reads up to the end offsets taken when it starts, so records arriving meanwhile wait for
    the next call. Raises DependencyError when the broker cannot be read within `timeout`.
    """
    topic = settings.kafka_dead_letter_topic
    consumer = _consumer(settings)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        letters = _read_until(consumer, ends, time.monotonic() + timeout)
    except KafkaError as error:
        raise _unreadable(settings, error) from error
    finally:
        consumer.close()
    return sorted(letters, key=lambda letter: (letter.partition, letter.offset))


def _read_until(
    consumer: KafkaConsumer, ends: dict[TopicPartition, int], deadline: float
) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        if time.monotonic() > deadline:
            raise DependencyError(
                "Reading the dead-letter topic did not reach its end in time; run the command "
                "again, and check the broker's health if this persists."
            )
        for tp, records in consumer.poll(timeout_ms=500).items():
            letters += [_letter(record) for record in records if record.offset < ends[tp]]
    return letters


def _letter(record: Any) -> DeadLetter:
    """A DeadLetter from a kafka-python ConsumerRecord."""
    headers = tuple((str(name), bytes(value or b"")) for name, value in record.headers)
    return DeadLetter(record.partition, record.offset, record.key, record.value or b"", headers)


def count_dead_letters(settings: Settings) -> int:
    """How many records the dead-letter topic holds now (0 when it does not exist)."""
    topic = settings.kafka_dead_letter_topic
    consumer = _consumer(settings)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        firsts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
    except KafkaError as error:
        raise _unreadable(settings, error) from error
    finally:
        consumer.close()
    return sum(ends[tp] - firsts[tp] for tp in partitions)


def select(
    letters: Iterable[DeadLetter],
    event_ids: Sequence[str] = (),
    consumer: str | None = None,
) -> list[DeadLetter]:
    """The letters with an event id in `event_ids` (any when empty), from `consumer` if given."""
    wanted = set(event_ids)
    return [
        letter
        for letter in letters
        if (not wanted or letter.event_id in wanted)
        and (consumer is None or letter.header(Header.DEAD_LETTER_CONSUMER) == consumer)
    ]


def replay(settings: Settings, letters: Sequence[DeadLetter]) -> ReplayReport:
    """Publish `letters` to the checks topic, each event id once, each acknowledged.

    Raises DependencyError when the broker does not acknowledge a write; the records acknowledged
    before it stay replayed, and running the replay again is safe (see the module docstring).
    """
    chosen, skipped = _plan(letters)
    if not chosen:
        return ReplayReport([], skipped)
    producer = _producer(settings)
    replayed: list[DeadLetter] = []
    try:
        for letter in chosen:
            _publish(producer, settings, letter)
            replayed.append(letter)
            logger.info(
                "Replayed a dead letter",
                extra={
                    "event_id": letter.event_id,
                    "partition": letter.partition,
                    "offset": letter.offset,
                },
            )
    finally:
        producer.close()
    return ReplayReport(replayed, skipped)


_NO_EVENT_ID = "it lacks the edge's event-id header, so every consumer would refuse it again"
_REPEATED = "its event id is replayed once already in this run"


def _plan(letters: Sequence[DeadLetter]) -> tuple[list[DeadLetter], list[tuple[DeadLetter, str]]]:
    chosen: list[DeadLetter] = []
    skipped: list[tuple[DeadLetter, str]] = []
    seen: set[str] = set()
    for letter in letters:
        event_id = letter.event_id
        if event_id is None:
            skipped.append((letter, _NO_EVENT_ID))
        elif event_id in seen:
            skipped.append((letter, _REPEATED))
        else:
            seen.add(event_id)
            chosen.append(letter)
    return chosen, skipped


def _publish(producer: KafkaProducer, settings: Settings, letter: DeadLetter) -> None:
    future = producer.send(
        settings.kafka_checks_topic,
        value=letter.body,
        key=letter.key,
        headers=letter.replay_headers(),
    )
    try:
        future.get(timeout=settings.kafka_publish_timeout_seconds)
    except KafkaError as error:
        raise DependencyError(
            f"The broker did not acknowledge the replay of event {letter.event_id} "
            f"({type(error).__name__}); the records listed as replayed before it are safe, and "
            "running the replay again is harmless."
        ) from error


def _consumer(settings: Settings) -> KafkaConsumer:
    timeout_ms = int(settings.kafka_publish_timeout_seconds * 1000)
    try:
        return KafkaConsumer(
            bootstrap_servers=settings.require_kafka().split(","),
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{settings.kafka_consumer_group_prefix}-dead-letters",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=max(timeout_ms, 1000),
        )
    except KafkaError as error:
        raise _unreadable(settings, error) from error


def _producer(settings: Settings) -> KafkaProducer:
    timeout_ms = int(settings.kafka_publish_timeout_seconds * 1000)
    try:
        return KafkaProducer(
            bootstrap_servers=settings.require_kafka().split(","),
            acks="all",
            enable_idempotence=settings.kafka_idempotent_producer,
            client_id=f"{settings.kafka_consumer_group_prefix}-replay",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except KafkaError as error:
        raise _unreadable(settings, error) from error


def _unreadable(settings: Settings, error: KafkaError) -> DependencyError:
    return DependencyError(
        f"Could not reach the Kafka broker at KAFKA_BOOTSTRAP_SERVERS="
        f"{settings.kafka_bootstrap_servers} ({type(error).__name__}); check that it runs and "
        "that the address is right."
    )
