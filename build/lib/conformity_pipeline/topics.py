"""The Kafka topics and the record headers the edge and the consumers agree on."""

import logging
from enum import StrEnum

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from conformity_pipeline.errors import DependencyError
from conformity_pipeline.settings import Settings

logger = logging.getLogger(__name__)


class Header(StrEnum):
    """Names of the Kafka record headers. Values are UTF-8 text."""

    EVENT_ID = "event-id"
    RECEIVED_AT = "received-at"
    SIGNATURE_FORM = "signature-form"
    BODY_SHA256 = "body-sha256"
    KIND = "kind"
    DEAD_LETTER_REASON = "dead-letter-reason"
    DEAD_LETTER_CONSUMER = "dead-letter-consumer"
    ORIGINAL_TOPIC = "original-topic"
    ORIGINAL_PARTITION = "original-partition"
    ORIGINAL_OFFSET = "original-offset"


def ensure_topics(settings: Settings) -> None:
    """Create the checks topic and the dead-letter topic when missing; existing ones stay."""
    admin = _admin(settings)
    wanted = [settings.kafka_checks_topic, settings.kafka_dead_letter_topic]
    try:
        existing = set(admin.list_topics())
        for name in wanted:
            if name not in existing:
                _create(admin, name, settings)
    except KafkaError as error:
        raise DependencyError(
            f"Could not create the Kafka topics {wanted}: {type(error).__name__}. Check "
            "KAFKA_BOOTSTRAP_SERVERS and that the broker allows topic creation."
        ) from error
    finally:
        admin.close()


def _create(admin: KafkaAdminClient, name: str, settings: Settings) -> None:
    topic = NewTopic(
        name,
        num_partitions=settings.kafka_topic_partitions,
        replication_factor=settings.kafka_replication_factor,
    )
    try:
        admin.create_topics([topic])
    except TopicAlreadyExistsError:
        return  # another process created it first: that is what we wanted
    logger.info("Created topic", extra={"topic": name})


def _admin(settings: Settings) -> KafkaAdminClient:
    servers = settings.require_kafka()
    try:
        return KafkaAdminClient(
            bootstrap_servers=servers.split(","),
            client_id=f"{settings.kafka_consumer_group_prefix}-admin",
            request_timeout_ms=int(settings.kafka_publish_timeout_seconds * 1000),
        )
    except KafkaError as error:
        raise DependencyError(
            f"Could not reach the Kafka broker at KAFKA_BOOTSTRAP_SERVERS={servers}: "
            f"{type(error).__name__}."
        ) from error
