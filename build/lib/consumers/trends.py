"""Per-account daily trends, recomputed from `check_history` for the days a change touches.

An account has one snapshot per UTC day on which it has at least one observation: a row in
`account_trend_snapshots` and its rows in `account_breakdown_snapshots`. A day without
observations repeats the state of the day before, so the views `account_daily_trend` and
`account_daily_breakdown` fill those days in at query time.

The state of a check at the end of a day is its last observation up to then. A check counts
towards failing, passing and the score only while that observation is neither `notScored` nor
`suppressed`; otherwise it is `excluded`. A new failure is an observation that counts and
fails while the check's previous observation did not count and fail (or there was none); a
resolution is an observation that counts and passes while the previous one counted and
failed. Every transition counts, so a check that fails, passes and fails again within one day
adds two new failures and one resolution to that day.

A new observation of check C at time T can change C's state from T's day up to the day of C's
next observation, and that next observation's transition; nothing else. Only the snapshot days
inside those spans are recomputed, so the work per batch grows with the account's checks and
the days it touches, not with the history.
"""

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Days in one recompute statement; a rebuild of a long history runs several.
_DAYS_PER_STATEMENT = 92

_SPANS = text(
    """
    SELECT (t.event_at AT TIME ZONE 'UTC')::date AS first_day,
           (SELECT (min(n.event_at) AT TIME ZONE 'UTC')::date FROM check_history n
            WHERE n.check_id = t.check_id AND n.event_at > t.event_at) AS last_day
    FROM unnest(CAST(:check_ids AS text[]), CAST(:event_ats AS timestamptz[]))
        AS t(check_id, event_at)
    """
)

_DAYS_IN_SPANS = text(
    """
    SELECT DISTINCT (h.event_at AT TIME ZONE 'UTC')::date AS day
    FROM unnest(CAST(:first_days AS date[]), CAST(:last_days AS date[])) AS r(first_day, last_day)
    JOIN check_history h
      ON h.account_id = :account_id
     AND h.event_at >= r.first_day::timestamp AT TIME ZONE 'UTC'
     AND h.event_at < coalesce((r.last_day + 1)::timestamp AT TIME ZONE 'UTC', 'infinity')
    ORDER BY day
    """
)

_ALL_DAYS = text(
    """
    SELECT DISTINCT (h.event_at AT TIME ZONE 'UTC')::date AS day
    FROM check_history h WHERE h.account_id = :account_id ORDER BY day
    """
)

_DELETE_BREAKDOWN = text(
    """
    DELETE FROM account_breakdown_snapshots
    WHERE account_id = :account_id AND day = ANY(CAST(:days AS date[]))
    """
)

_DELETE_ACCOUNT = (
    text("DELETE FROM account_breakdown_snapshots WHERE account_id = :account_id"),
    text("DELETE FROM account_trend_snapshots WHERE account_id = :account_id"),
)

_RECOMPUTE = text(
    """
    WITH days AS (
        SELECT d AS day,
               d::timestamp AT TIME ZONE 'UTC' AS day_start,
               (d + 1)::timestamp AT TIME ZONE 'UTC' AS day_end
        FROM unnest(CAST(:days AS date[])) AS d
    ),
    states AS (
        SELECT d.day, s.*
        FROM days d
        CROSS JOIN checks c
        CROSS JOIN LATERAL (
            SELECT h.status, h.risk_level, h.counted, h.rule_id, h.service, h.region,
                   h.categories, h.compliances
            FROM check_history h
            WHERE h.check_id = c.check_id AND h.event_at < d.day_end
            ORDER BY h.event_at DESC
            LIMIT 1
        ) s
        WHERE c.account_id = :account_id
    ),
    totals AS (
        SELECT d.day,
               count(s.status) FILTER (WHERE s.counted AND s.status = 'FAILURE') AS failing,
               count(s.status) FILTER (WHERE s.counted AND s.status = 'SUCCESS') AS passing,
               count(s.status) FILTER (WHERE NOT s.counted) AS excluded,
               count(s.status) FILTER (WHERE s.counted AND s.status = 'FAILURE'
                                       AND s.risk_level = 'LOW') AS failing_low,
               count(s.status) FILTER (WHERE s.counted AND s.status = 'FAILURE'
                                       AND s.risk_level = 'MEDIUM') AS failing_medium,
               count(s.status) FILTER (WHERE s.counted AND s.status = 'FAILURE'
                                       AND s.risk_level = 'HIGH') AS failing_high,
               count(s.status) FILTER (WHERE s.counted AND s.status = 'FAILURE'
                                       AND s.risk_level = 'VERY_HIGH') AS failing_very_high,
               count(s.status) FILTER (WHERE s.counted AND s.status = 'FAILURE'
                                       AND s.risk_level = 'EXTREME') AS failing_extreme
        FROM days d LEFT JOIN states s ON s.day = d.day
        GROUP BY d.day
    ),
    moves AS (
        SELECT d.day,
               count(*) FILTER (WHERE o.counted AND o.status = 'FAILURE'
                                AND NOT coalesce(p.failing, false)) AS new_failures,
               count(*) FILTER (WHERE o.counted AND o.status = 'SUCCESS'
                                AND coalesce(p.failing, false)) AS resolved
        FROM days d
        JOIN check_history o
          ON o.account_id = :account_id
         AND o.event_at >= d.day_start AND o.event_at < d.day_end
        LEFT JOIN LATERAL (
            SELECT h.counted AND h.status = 'FAILURE' AS failing
            FROM check_history h
            WHERE h.check_id = o.check_id AND h.event_at < o.event_at
            ORDER BY h.event_at DESC
            LIMIT 1
        ) p ON true
        GROUP BY d.day
    ),
    trend AS (
        INSERT INTO account_trend_snapshots AS a (
            account_id, day, failing, passing, excluded, score, new_failures, resolved,
            failing_low, failing_medium, failing_high, failing_very_high, failing_extreme
        )
        SELECT :account_id, t.day, t.failing, t.passing, t.excluded,
               round(t.passing * 100.0 / nullif(t.passing + t.failing, 0), 2),
               coalesce(m.new_failures, 0), coalesce(m.resolved, 0),
               t.failing_low, t.failing_medium, t.failing_high, t.failing_very_high,
               t.failing_extreme
        FROM totals t LEFT JOIN moves m ON m.day = t.day
        ON CONFLICT (account_id, day) DO UPDATE SET
            failing = EXCLUDED.failing, passing = EXCLUDED.passing,
            excluded = EXCLUDED.excluded, score = EXCLUDED.score,
            new_failures = EXCLUDED.new_failures, resolved = EXCLUDED.resolved,
            failing_low = EXCLUDED.failing_low, failing_medium = EXCLUDED.failing_medium,
            failing_high = EXCLUDED.failing_high,
            failing_very_high = EXCLUDED.failing_very_high,
            failing_extreme = EXCLUDED.failing_extreme
        RETURNING a.day
    )
    INSERT INTO account_breakdown_snapshots (account_id, day, dimension, value, failing, passing)
    SELECT :account_id, s.day, v.dimension, v.value,
           count(*) FILTER (WHERE s.status = 'FAILURE'),
           count(*) FILTER (WHERE s.status = 'SUCCESS')
    FROM states s
    CROSS JOIN LATERAL (
        SELECT 'risk_level', s.risk_level
        UNION ALL SELECT 'service', s.service
        UNION ALL SELECT 'region', s.region
        UNION ALL SELECT 'rule', s.rule_id
        UNION ALL SELECT 'category', unnest(s.categories)
        UNION ALL SELECT 'compliance', unnest(s.compliances)
    ) AS v(dimension, value)
    WHERE s.counted
    GROUP BY s.day, v.dimension, v.value
    """
)

Span = tuple[date, date | None]


async def refresh_trends(
    connection: AsyncConnection, account_id: str, changes: Sequence[tuple[str, datetime]]
) -> None:
    """Recompute the snapshot days that changed observations (check id, event time) touch.

    The caller holds the account's lock and has already written the observations.
    """
    if not changes:
        return
    days = await affected_days(connection, account_id, changes)
    await recompute_days(connection, account_id, days)


async def affected_days(
    connection: AsyncConnection, account_id: str, changes: Sequence[tuple[str, datetime]]
) -> list[date]:
    """The account's observation days inside the spans the changes can affect, in order."""
    result = await connection.execute(
        _SPANS,
        {
            "check_ids": [check_id for check_id, _ in changes],
            "event_ats": [event_at for _, event_at in changes],
        },
    )
    spans = merge_spans([(row.first_day, row.last_day) for row in result])
    days = await connection.execute(
        _DAYS_IN_SPANS,
        {
            "account_id": account_id,
            "first_days": [first for first, _ in spans],
            "last_days": [last for _, last in spans],
        },
    )
    return [row.day for row in days]


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Overlapping or adjacent day spans joined; None as the last day means open-ended."""
    merged: list[Span] = []
    for first, last in sorted(spans, key=lambda span: span[0]):
        if merged and _reaches(merged[-1][1], first):
            previous_first, previous_last = merged[-1]
            merged[-1] = (previous_first, _later(previous_last, last))
        else:
            merged.append((first, last))
    return merged


def _reaches(last: date | None, first: date) -> bool:
    return last is None or (first - last).days <= 1


def _later(one: date | None, other: date | None) -> date | None:
    if one is None or other is None:
        return None
    return max(one, other)


async def recompute_days(
    connection: AsyncConnection, account_id: str, days: Sequence[date]
) -> None:
    """Write the snapshots of `days` (days with observations) from `check_history`."""
    for start in range(0, len(days), _DAYS_PER_STATEMENT):
        chunk = list(days[start : start + _DAYS_PER_STATEMENT])
        parameters = {"account_id": account_id, "days": chunk}
        await connection.execute(_DELETE_BREAKDOWN, parameters)
        await connection.execute(_RECOMPUTE, parameters)


async def recompute_account(connection: AsyncConnection, account_id: str) -> int:
    """Drop and rewrite every snapshot of the account; return how many days it has."""
    for statement in _DELETE_ACCOUNT:
        await connection.execute(statement, {"account_id": account_id})
    result = await connection.execute(_ALL_DAYS, {"account_id": account_id})
    days = [row.day for row in result]
    await recompute_days(connection, account_id, days)
    return len(days)
