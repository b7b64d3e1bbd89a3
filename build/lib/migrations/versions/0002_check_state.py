"""Check state, check history, per-account daily trends and the views over them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

`docs/tables.md` describes every table, function and view created here and the definitions
behind the numbers (new failures, resolutions, the score).
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS_CHECK = "status IN ('SUCCESS', 'FAILURE')"
_RISK_CHECK = "risk_level IN ('LOW', 'MEDIUM', 'HIGH', 'VERY_HIGH', 'EXTREME')"
_COUNTED = "NOT not_scored AND NOT suppressed"
_DIMENSIONS = "dimension IN ('risk_level', 'category', 'compliance', 'service', 'region', 'rule')"
_RISK_COUNTS = (
    "failing_low",
    "failing_medium",
    "failing_high",
    "failing_very_high",
    "failing_extreme",
)


def _texts(name: str) -> sa.Column[list[str]]:
    return sa.Column(name, postgresql.ARRAY(sa.Text), nullable=False)


def _moment(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer, nullable=False)


def _flags() -> list[sa.Column[bool]]:
    return [
        sa.Column("not_scored", sa.Boolean, nullable=False),
        sa.Column("suppressed", sa.Boolean, nullable=False),
        sa.Column("counted", sa.Boolean, sa.Computed(_COUNTED, persisted=True), nullable=False),
    ]


def _create_checks() -> None:
    op.create_table(
        "checks",
        sa.Column("check_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("organisation_id", sa.Text),
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("rule_title", sa.Text),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("risk_level", sa.Text, nullable=False),
        sa.Column("message", sa.Text),
        _texts("categories"),
        _texts("compliances"),
        _texts("tags"),
        *_flags(),
        sa.Column("resolution_page_url", sa.Text),
        _moment("first_seen_at"),
        _moment("status_since"),
        _moment("last_event_at"),
        sa.Column("body_sha256", sa.Text(collation="C"), nullable=False),
        sa.Column("document", postgresql.JSONB, nullable=False),
        sa.CheckConstraint(_STATUS_CHECK, name="checks_status_check"),
        sa.CheckConstraint(_RISK_CHECK, name="checks_risk_level_check"),
    )
    op.create_index("checks_account_status", "checks", ["account_id", "status"])


def _create_history() -> None:
    op.create_table(
        "check_history",
        sa.Column("check_id", sa.Text, nullable=False),
        _moment("event_at"),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("risk_level", sa.Text, nullable=False),
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("region", sa.Text, nullable=False),
        _texts("categories"),
        _texts("compliances"),
        *_flags(),
        sa.Column("message", sa.Text),
        sa.Column("body_sha256", sa.Text(collation="C"), nullable=False),
        sa.PrimaryKeyConstraint("check_id", "event_at", name="check_history_pkey"),
        sa.CheckConstraint(_STATUS_CHECK, name="check_history_status_check"),
        sa.CheckConstraint(_RISK_CHECK, name="check_history_risk_level_check"),
    )
    op.create_index("check_history_account_event", "check_history", ["account_id", "event_at"])


def _create_snapshots() -> None:
    op.create_table(
        "account_trend_snapshots",
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        _count("failing"),
        _count("passing"),
        _count("excluded"),
        sa.Column("score", sa.Numeric(5, 2)),
        _count("new_failures"),
        _count("resolved"),
        *[_count(name) for name in _RISK_COUNTS],
        sa.PrimaryKeyConstraint("account_id", "day", name="account_trend_snapshots_pkey"),
    )
    op.create_table(
        "account_breakdown_snapshots",
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("dimension", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        _count("failing"),
        _count("passing"),
        sa.PrimaryKeyConstraint(
            "account_id", "day", "dimension", "value", name="account_breakdown_snapshots_pkey"
        ),
        sa.CheckConstraint(_DIMENSIONS, name="account_breakdown_snapshots_dimension_check"),
    )


# Each snapshot row stands for its own day and every later day up to the account's next
# snapshot, and never past `through`; a day without events repeats the state, with no
# transitions.
_SNAPSHOT_SPAN = """
    account_trend_snapshots s
    CROSS JOIN LATERAL generate_series(
        0,
        least(
            (SELECT min(n.day) FROM account_trend_snapshots n
             WHERE n.account_id = s.account_id AND n.day > s.day) - 1,
            through
        ) - s.day
    ) AS g(n)
"""

_TREND_FUNCTION = f"""
CREATE FUNCTION account_daily_trend_through(through date)
RETURNS TABLE (
    account_id text, day date, has_events boolean, failing integer, passing integer,
    excluded integer, score numeric, new_failures integer, resolved integer,
    failing_low integer, failing_medium integer, failing_high integer,
    failing_very_high integer, failing_extreme integer
)
LANGUAGE sql STABLE
AS $$
    SELECT s.account_id, s.day + g.n, g.n = 0, s.failing, s.passing, s.excluded, s.score,
           CASE WHEN g.n = 0 THEN s.new_failures ELSE 0 END,
           CASE WHEN g.n = 0 THEN s.resolved ELSE 0 END,
           s.failing_low, s.failing_medium, s.failing_high, s.failing_very_high,
           s.failing_extreme
    FROM {_SNAPSHOT_SPAN}
$$
"""

_BREAKDOWN_FUNCTION = f"""
CREATE FUNCTION account_daily_breakdown_through(through date)
RETURNS TABLE (
    account_id text, day date, dimension text, value text, failing integer, passing integer
)
LANGUAGE sql STABLE
AS $$
    SELECT s.account_id, s.day + g.n, b.dimension, b.value, b.failing, b.passing
    FROM {_SNAPSHOT_SPAN}
    JOIN account_breakdown_snapshots b ON b.account_id = s.account_id AND b.day = s.day
$$
"""

_TODAY = "(now() AT TIME ZONE 'UTC')::date"

_FAILURE_EPISODES = """
CREATE VIEW failure_episodes AS
WITH marked AS (
    SELECT h.account_id, h.check_id, h.event_at, h.rule_id, h.risk_level,
           h.counted AND h.status = 'FAILURE' AS failing,
           h.counted AND h.status = 'SUCCESS' AS passing,
           lag(h.counted AND h.status = 'FAILURE', 1, false)
               OVER (PARTITION BY h.account_id, h.check_id ORDER BY h.event_at) AS was_failing
    FROM check_history h
), numbered AS (
    SELECT m.*,
           m.failing AND NOT m.was_failing AS starts,
           m.was_failing AND NOT m.failing AS ends,
           count(*) FILTER (WHERE m.failing AND NOT m.was_failing)
               OVER (PARTITION BY m.account_id, m.check_id ORDER BY m.event_at) AS episode
    FROM marked m
), episodes AS (
    SELECT n.account_id, n.check_id,
           min(n.rule_id) FILTER (WHERE n.starts) AS rule_id,
           min(n.risk_level) FILTER (WHERE n.starts) AS risk_level,
           min(n.event_at) FILTER (WHERE n.starts) AS failed_at,
           min(n.event_at) FILTER (WHERE n.ends) AS ended_at,
           coalesce(bool_or(n.ends AND n.passing), false) AS resolved
    FROM numbered n
    WHERE n.episode > 0
    GROUP BY n.account_id, n.check_id, n.episode
)
SELECT e.account_id, e.check_id, e.rule_id, e.risk_level, e.failed_at, e.ended_at, e.resolved,
       CASE WHEN e.resolved THEN e.ended_at - e.failed_at END AS time_to_resolve
FROM episodes e
"""

_TIME_TO_RESOLVE = """
CREATE VIEW account_time_to_resolve AS
SELECT e.account_id, e.risk_level,
       count(*)::integer AS resolved_failures,
       avg(e.time_to_resolve) AS mean_time_to_resolve,
       round(avg(extract(epoch FROM e.time_to_resolve)) / 3600, 2) AS mean_hours_to_resolve
FROM failure_episodes e
WHERE e.resolved
GROUP BY e.account_id, e.risk_level
"""

_ACCOUNT_COMPLIANCE = """
CREATE VIEW account_compliance AS
SELECT c.account_id,
       count(*)::integer AS checks,
       count(*) FILTER (WHERE c.counted AND c.status = 'FAILURE')::integer AS failing,
       count(*) FILTER (WHERE c.counted AND c.status = 'SUCCESS')::integer AS passing,
       count(*) FILTER (WHERE NOT c.counted)::integer AS excluded,
       round(count(*) FILTER (WHERE c.counted AND c.status = 'SUCCESS') * 100.0
             / nullif(count(*) FILTER (WHERE c.counted), 0), 2) AS score,
       max(c.last_event_at) AS last_event_at
FROM checks c
GROUP BY c.account_id
"""

_FAILING_CHECKS = """
CREATE VIEW failing_checks AS
SELECT c.account_id, c.check_id, c.rule_id, c.rule_title, c.service, c.region, c.resource,
       c.risk_level, c.counted, c.status_since AS failing_since, c.last_event_at, c.message,
       c.resolution_page_url
FROM checks c
WHERE c.status = 'FAILURE'
"""

_VIEWS = (
    "account_daily_trend",
    "account_daily_breakdown",
    "account_time_to_resolve",
    "failure_episodes",
    "account_compliance",
    "failing_checks",
)


def _create_views() -> None:
    op.execute(_TREND_FUNCTION)
    op.execute(_BREAKDOWN_FUNCTION)
    op.execute(
        f"CREATE VIEW account_daily_trend AS SELECT * FROM account_daily_trend_through({_TODAY})"
    )
    op.execute(
        "CREATE VIEW account_daily_breakdown AS "
        f"SELECT * FROM account_daily_breakdown_through({_TODAY})"
    )
    op.execute(_FAILURE_EPISODES)
    op.execute(_TIME_TO_RESOLVE)
    op.execute(_ACCOUNT_COMPLIANCE)
    op.execute(_FAILING_CHECKS)


def upgrade() -> None:
    _create_checks()
    _create_history()
    _create_snapshots()
    _create_views()


def downgrade() -> None:
    for view in _VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.execute("DROP FUNCTION IF EXISTS account_daily_breakdown_through(date)")
    op.execute("DROP FUNCTION IF EXISTS account_daily_trend_through(date)")
    for table in ("account_breakdown_snapshots", "account_trend_snapshots"):
        op.drop_table(table)
    op.drop_table("check_history")
    op.drop_table("checks")
