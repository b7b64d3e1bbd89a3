"""Archive of every verified webhook delivery.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text),
        sa.Column("check_id", sa.Text),
        sa.Column("status", sa.Text),
        sa.Column("document", postgresql.JSONB, nullable=False),
        sa.Column("raw_body", sa.LargeBinary),
        sa.Column("body_sha256", sa.Text, nullable=False),
        sa.Column("signature_form", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("delivery_count", sa.Integer, nullable=False),
        sa.UniqueConstraint("body_sha256", name="webhook_events_body_sha256_key"),
        sa.CheckConstraint("kind IN ('check', 'test')", name="webhook_events_kind_check"),
    )
    op.create_index(
        "webhook_events_account_received", "webhook_events", ["account_id", "received_at"]
    )
    op.create_index("webhook_events_check_id", "webhook_events", ["check_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("body_sha256", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
    )
    op.create_index("webhook_deliveries_body_sha256", "webhook_deliveries", ["body_sha256"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
