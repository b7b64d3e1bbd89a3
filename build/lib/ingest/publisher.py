"""Writing verified deliveries to the checks topic, and knowing when that is impossible."""

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from faststream.kafka import KafkaBroker

from conformity_pipeline.errors import DependencyError
from conformity_pipeline.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One Kafka record: the exact body bytes, the partition key and the edge's headers."""

    value: bytes
    key: bytes | None
    headers: dict[str, str]


class Publisher(Protocol):
    """What the edge needs from Kafka."""

    async def publish(self, record: OutgoingRecord) -> None:
        """Return only once the broker acknowledged the write; DependencyError otherwise."""
        ...

    async def ready(self) -> bool:
        """True when the broker answers."""
        ...


class KafkaPublisher:
    """Publishes through a FastStream Kafka producer with acks=all and a bounded wait."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka_checks_topic
        self.timeout = settings.kafka_publish_timeout_seconds
        timeout_ms = int(self.timeout * 1000)
        self.broker = KafkaBroker(
            settings.require_kafka().split(","),
            acks="all",
            enable_idempotence=settings.kafka_idempotent_producer,
            request_timeout_ms=timeout_ms,
            client_id=f"{settings.kafka_consumer_group_prefix}-ingest",
            logger=None,
        )

    async def start(self) -> None:
        """Connect the producer; the broker may still be down, publish() then fails cleanly."""
        await self.broker.connect()

    async def stop(self) -> None:
        """Flush and close the producer."""
        await self.broker.stop()

    async def publish(self, record: OutgoingRecord) -> None:
        """Write and wait for the acknowledgement, at most KAFKA_PUBLISH_TIMEOUT_SECONDS."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.broker.publish(
                    record.value, self.topic, key=record.key, headers=record.headers
                )
        except (TimeoutError, Exception) as error:
            raise DependencyError(
                f"The Kafka broker did not acknowledge the write within {self.timeout:g} s "
                f"({type(error).__name__})."
            ) from error

    async def ready(self) -> bool:
        """Ask the broker for its cluster description, waiting at most a few seconds."""
        return await self.broker.ping(timeout=min(self.timeout, 5.0))
