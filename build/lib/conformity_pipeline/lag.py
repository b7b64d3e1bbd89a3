"""How far each consumer group is behind the end of the checks topic."""

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition

from conformity_pipeline.settings import Settings


def group_lag(settings: Settings, group: str) -> int:
    """Records on the checks topic that `group` has not committed yet (0 when caught up)."""
    servers = settings.require_kafka().split(",")
    topic = settings.kafka_checks_topic
    timeout_ms = int(settings.kafka_publish_timeout_seconds * 1000)
    consumer = KafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, request_timeout_ms=timeout_ms
    )
    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=timeout_ms)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        committed = admin.list_group_offsets({group: partitions}).get(group, {})
    finally:
        consumer.close()
        admin.close()
    # A partition the group never committed on counts from its start (offset -1 means none).
    done = {tp: max(0, meta.offset) for tp, meta in committed.items()}
    return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
