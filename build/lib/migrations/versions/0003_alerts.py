"""The alerts reaction's outbox: one row per (check, failure) alerted, with its sending state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

`consumers/alerts.py` inserts a row per new EXTREME or VERY_HIGH failure (the primary key makes
the insert idempotent); `consumers/alert_sender.py` posts pending rows and records the outcome
in the same row, so a failure is posted once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = "state IN ('pending', 'sending', 'sent', 'failed')"


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("check_id", sa.Text, nullable=False),
        sa.Column("failure_key", sa.Text, nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True)),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("rule_id", sa.Text),
        sa.Column("risk_level", sa.Text, nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("idempotency_key", sa.Uuid, nullable=False),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("claim_id", sa.Uuid),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("check_id", "failure_key", name="alerts_pkey"),
        sa.UniqueConstraint("idempotency_key", name="alerts_idempotency_key_key"),
        sa.CheckConstraint(_STATES, name="alerts_state_check"),
    )
    op.create_index(
        "alerts_due",
        "alerts",
        ["next_attempt_at"],
        postgresql_where=sa.text("state IN ('pending', 'sending')"),
    )
    op.create_index("alerts_account_created", "alerts", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_table("alerts")
