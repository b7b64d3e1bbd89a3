"""SQLAlchemy table definitions the code queries. Alembic migrations own the schema itself."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

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
