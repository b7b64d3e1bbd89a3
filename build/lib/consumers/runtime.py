"""Runs a reaction as a FastStream batch subscriber in its own consumer group.

The promise every reaction gets: a batch's effects are written in one Postgres transaction,
records that cannot be stored go to the dead-letter topic, and only then are the offsets
committed. A crash anywhere before the commit redelivers the batch, so a reaction's `apply`
must be idempotent.
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conformity_pipeline import metrics
from conformity_pipeline.settings import Settings
from conformity_pipeline.topics import Header
from consumers.delivery import Delivery, RecordPosition, UnreadableRecord, decode_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record a reaction will not store, with the reason sent along to the dead letters."""

    position: RecordPosition
    key: bytes | None
    body: bytes
    headers: tuple[tuple[str, bytes], ...]
    reason: str

    @classmethod
    def of(cls, delivery: Delivery, reason: str) -> "Rejection":
        """Reject a decoded delivery, keeping the headers the edge wrote."""
        headers = (
            (Header.EVENT_ID.value, str(delivery.event_id).encode()),
            (Header.RECEIVED_AT.value, delivery.received_at.isoformat().encode()),
            (Header.BODY_SHA256.value, delivery.body_sha256.encode()),
            (Header.SIGNATURE_FORM.value, delivery.signature_form.encode()),
            (Header.KIND.value, delivery.kind.encode()),
        )
        return cls(delivery.position, delivery.key, delivery.body, headers, reason)


class Reaction(Protocol):
    """What a consumer implements: its name and how it applies a batch."""

    @property
    def name(self) -> str:
        """Unique name; the consumer group is `<KAFKA_CONSUMER_GROUP_PREFIX>.<name>`."""
        ...

    async def apply(
        self, connection: AsyncConnection, deliveries: Sequence[Delivery]
    ) -> Sequence[Rejection]:
        """Write the batch's effects inside the open transaction; return what to dead-letter.

        Called again with the same deliveries after any failure, so it must be idempotent.
        """
        ...


@runtime_checkable
class Lifecycle(Protocol):
    """A reaction with work outside its batches (a sender loop, say) that starts and stops
    with the consumers."""

    async def start(self, engine: AsyncEngine, settings: Settings) -> None:
        """Start the background work; called once the schema is known to be at head."""
        ...

    async def stop(self) -> None:
        """Stop the background work, handing back anything unfinished."""
        ...


def _is_unavailable(error: BaseException) -> bool:
    """True when Postgres itself is unreachable, as opposed to refusing one record."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


class BatchRunner:
    """Applies batches of records for one reaction and dead-letters what it cannot store."""

    def __init__(
        self, reaction: Reaction, engine: AsyncEngine, broker: KafkaBroker, settings: Settings
    ) -> None:
        self.reaction = reaction
        self.engine = engine
        self.broker = broker
        self.settings = settings

    async def run(self, records: Sequence[Any]) -> None:
        """Apply one batch of aiokafka ConsumerRecords; raise to have the batch redelivered."""
        started = time.perf_counter()
        await self._run(records)
        name = self.reaction.name
        metrics.CONSUMER_BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)
        metrics.CONSUMER_EVENTS.labels(name).inc(len(records))

    async def _run(self, records: Sequence[Any]) -> None:
        deliveries, rejections = self._decode(records)
        try:
            rejections += await self._apply(deliveries)
        except Exception as error:
            if not _is_unavailable(error):
                raise
            logger.warning(
                "Postgres is unavailable; the batch will be redelivered",
                extra={"consumer": self.reaction.name, "error": type(error).__name__},
            )
            await asyncio.sleep(self.settings.consumer_retry_backoff_seconds)
            raise
        for rejection in rejections:
            await self._dead_letter(rejection)

    def _decode(self, records: Sequence[Any]) -> tuple[list[Delivery], list[Rejection]]:
        deliveries: list[Delivery] = []
        rejections: list[Rejection] = []
        for record in records:
            position = RecordPosition(record.topic, record.partition, record.offset)
            try:
                deliveries.append(
                    decode_record(position, record.key, record.value, record.headers)
                )
            except UnreadableRecord as error:
                headers = tuple((name, value) for name, value in record.headers)
                rejections.append(
                    Rejection(position, record.key, record.value or b"", headers, str(error))
                )
        return deliveries, rejections

    async def _apply(self, deliveries: Sequence[Delivery]) -> list[Rejection]:
        if not deliveries:
            return []
        try:
            async with self.engine.begin() as connection:
                return list(await self.reaction.apply(connection, deliveries))
        except Exception as error:
            if _is_unavailable(error) or len(deliveries) == 1:
                raise
            logger.warning(
                "A batch failed; applying its records one by one to find the bad one",
                extra={"consumer": self.reaction.name, "error": type(error).__name__},
            )
        return await self._apply_one_by_one(deliveries)

    async def _apply_one_by_one(self, deliveries: Sequence[Delivery]) -> list[Rejection]:
        rejections: list[Rejection] = []
        for delivery in deliveries:
            try:
                async with self.engine.begin() as connection:
                    rejections += await self.reaction.apply(connection, [delivery])
            except Exception as error:
                if _is_unavailable(error):
                    raise
                reason = f"{type(error).__name__}: {str(error).splitlines()[0]}"
                rejections.append(Rejection.of(delivery, f"Could not store the record: {reason}"))
        return rejections

    async def _dead_letter(self, rejection: Rejection) -> None:
        position = rejection.position
        headers = {name: value.decode("utf-8", "replace") for name, value in rejection.headers}
        headers |= {
            Header.DEAD_LETTER_REASON.value: rejection.reason,
            Header.DEAD_LETTER_CONSUMER.value: self.reaction.name,
            Header.ORIGINAL_TOPIC.value: position.topic,
            Header.ORIGINAL_PARTITION.value: str(position.partition),
            Header.ORIGINAL_OFFSET.value: str(position.offset),
        }
        await self.broker.publish(
            rejection.body,
            self.settings.kafka_dead_letter_topic,
            key=rejection.key,
            headers=headers,
        )
        metrics.CONSUMER_DEAD_LETTERS.labels(self.reaction.name).inc()
        logger.warning(
            "Sent a record to the dead letters",
            extra={
                "consumer": self.reaction.name,
                "topic": position.topic,
                "partition": position.partition,
                "offset": position.offset,
                "reason": rejection.reason,
            },
        )


def subscribe(
    broker: KafkaBroker, reaction: Reaction, engine: AsyncEngine, settings: Settings
) -> BatchRunner:
    """Register `reaction` on `broker` as a batch subscriber with commit-after-transaction."""
    runner = BatchRunner(reaction, engine, broker, settings)

    @broker.subscriber(
        settings.kafka_checks_topic,
        group_id=f"{settings.kafka_consumer_group_prefix}.{reaction.name}",
        batch=True,
        max_records=settings.consumer_max_records,
        batch_timeout_ms=settings.consumer_batch_timeout_ms,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def handle(message: KafkaMessage) -> None:
        # Only the message context is taken, so FastStream leaves the bodies undecoded.
        records = message.raw_message
        await runner.run(records if isinstance(records, tuple) else (records,))

    return runner
