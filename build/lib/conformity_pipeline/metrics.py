"""Prometheus metrics of the edge and the consumers (served at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

INGEST_REQUESTS = Counter(
    "conformity_ingest_requests",
    "Webhook requests by outcome (accepted, refused, unavailable) and reason.",
    ["outcome", "reason"],
)
INGEST_SIGNATURE_FORMS = Counter(
    "conformity_ingest_signature_form",
    "Accepted requests by the signature form that matched (raw, js-stringify, unsigned).",
    ["form"],
)
INGEST_REQUEST_SECONDS = Histogram(
    "conformity_ingest_request_seconds", "Time from request start to answer."
)
INGEST_BROKER_WRITE_SECONDS = Histogram(
    "conformity_ingest_broker_write_seconds", "Time the broker took to acknowledge a write."
)

CONSUMER_EVENTS = Counter(
    "conformity_consumer_events", "Records a consumer applied.", ["consumer"]
)
CONSUMER_DUPLICATES = Counter(
    "conformity_consumer_duplicates",
    "Records whose delivery was already stored (Kafka redeliveries).",
    ["consumer"],
)
CONSUMER_DEAD_LETTERS = Counter(
    "conformity_consumer_dead_letters", "Records sent to the dead-letter topic.", ["consumer"]
)
CONSUMER_BATCH_SECONDS = Histogram(
    "conformity_consumer_batch_seconds",
    "Time to apply one batch, commit it and dead-letter its rejects.",
    ["consumer"],
)
CONSUMER_LAG = Gauge(
    "conformity_consumer_lag", "Records on the topic the consumer has not committed.", ["consumer"]
)
