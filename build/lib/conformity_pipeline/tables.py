"""SQLAlchemy table definitions the code queries. Alembic migrations own the schema itself."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("last_received_at", DateTime(timezone=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("account_id", Text),
    Column("check_id", Text),
    Column("status", Text),
    Column("document", JSONB, nullable=False),
    Column("raw_body", LargeBinary),
    Column("body_sha256", Text, nullable=False, unique=True),
    Column("signature_form", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("delivery_count", Integer, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("event_id", Uuid, primary_key=True),
    Column("body_sha256", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
)

# Check state, history and trends (migration 0002; docs/tables.md describes them).

checks = Table(
    "checks",
    metadata,
    Column("check_id", Text, primary_key=True),
    Column("account_id", Text, nullable=False),
    Column("organisation_id", Text),
    Column("rule_id", Text, nullable=False),
    Column("rule_title", Text),
    Column("service", Text, nullable=False),
    Column("region", Text, nullable=False),
    Column("resource", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("risk_level", Text, nullable=False),
    Column("message", Text),
    Column("categories", ARRAY(Text), nullable=False),
    Column("compliances", ARRAY(Text), nullable=False),
    Column("tags", ARRAY(Text), nullable=False),
    Column("not_scored", Boolean, nullable=False),
    Column("suppressed", Boolean, nullable=False),
    Column("counted", Boolean, Computed("NOT not_scored AND NOT suppressed"), nullable=False),
    Column("resolution_page_url", Text),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("status_since", DateTime(timezone=True), nullable=False),
    Column("last_event_at", DateTime(timezone=True), nullable=False),
    Column("body_sha256", Text(collation="C"), nullable=False),
    Column("document", JSONB, nullable=False),
)

check_history = Table(
    "check_history",
    metadata,
    Column("check_id", Text, nullable=False),
    Column("event_at", DateTime(timezone=True), nullable=False),
    Column("account_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("risk_level", Text, nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("service", Text, nullable=False),
    Column("region", Text, nullable=False),
    Column("categories", ARRAY(Text), nullable=False),
    Column("compliances", ARRAY(Text), nullable=False),
    Column("not_scored", Boolean, nullable=False),
    Column("suppressed", Boolean, nullable=False),
    Column("counted", Boolean, Computed("NOT not_scored AND NOT suppressed"), nullable=False),
    Column("message", Text),
    Column("body_sha256", Text(collation="C"), nullable=False),
    PrimaryKeyConstraint("check_id", "event_at", name="check_history_pkey"),
)

account_trend_snapshots = Table(
    "account_trend_snapshots",
    metadata,
    Column("account_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("failing", Integer, nullable=False),
    Column("passing", Integer, nullable=False),
    Column("excluded", Integer, nullable=False),
    Column("score", Numeric(5, 2)),
    Column("new_failures", Integer, nullable=False),
    Column("resolved", Integer, nullable=False),
    Column("failing_low", Integer, nullable=False),
    Column("failing_medium", Integer, nullable=False),
    Column("failing_high", Integer, nullable=False),
    Column("failing_very_high", Integer, nullable=False),
    Column("failing_extreme", Integer, nullable=False),
    PrimaryKeyConstraint("account_id", "day", name="account_trend_snapshots_pkey"),
)

account_breakdown_snapshots = Table(
    "account_breakdown_snapshots",
    metadata,
    Column("account_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("dimension", Text, nullable=False),
    Column("value", Text, nullable=False),
    Column("failing", Integer, nullable=False),
    Column("passing", Integer, nullable=False),
    PrimaryKeyConstraint(
        "account_id", "day", "dimension", "value", name="account_breakdown_snapshots_pkey"
    ),
)
