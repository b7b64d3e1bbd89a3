"""Test helpers for the check tables: deliveries, a dump of every table, and a reference model.

The reference model is plain Python over the deduplicated observations sorted by event time,
following the definitions in `consumers/trends.py` and `docs/tables.md`. The dump reads the
tables into the very same shape, so a test compares the two with one `==`.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.checks import Check, read_check
from consumers.delivery import Delivery

RISK_LEVELS = ("LOW", "MEDIUM", "HIGH", "VERY_HIGH", "EXTREME")
CHECK_TABLES = (
    "checks",
    "check_history",
    "account_trend_snapshots",
    "account_breakdown_snapshots",
)
ARCHIVE_TABLES = ("webhook_events", "webhook_deliveries")


async def truncate(connection: AsyncConnection, tables: Iterable[str] = CHECK_TABLES) -> None:
    """Empty the tables, so one database serves many hypothesis examples."""
    await connection.execute(text(f"TRUNCATE {', '.join(tables)}"))


@dataclass(frozen=True)
class Dump:
    """Every table and view of the check state, in comparable form."""

    checks: dict[str, tuple[Any, ...]]
    history: dict[tuple[str, datetime], tuple[Any, ...]]
    trend: list[tuple[Any, ...]]
    breakdown: set[tuple[Any, ...]]
    episodes: list[tuple[Any, ...]]
    time_to_resolve: set[tuple[Any, ...]]


_CHECK_COLUMNS = (
    "account_id, status, risk_level, rule_id, service, region, resource, categories, "
    "compliances, tags, not_scored, suppressed, first_seen_at, status_since, last_event_at, "
    "body_sha256, message"
)
_HISTORY_COLUMNS = "status, risk_level, counted, categories, compliances, body_sha256"
_TREND_COLUMNS = (
    "account_id, day, has_events, failing, passing, excluded, score, new_failures, resolved, "
    "failing_low, failing_medium, failing_high, failing_very_high, failing_extreme"
)


async def dump(connection: AsyncConnection, through: date) -> Dump:
    """Read every table and view; the filled views up to `through`."""

    async def rows(sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await connection.execute(text(sql), parameters)]

    checks = await rows(f"SELECT check_id, {_CHECK_COLUMNS} FROM checks")
    history = await rows(f"SELECT check_id, event_at, {_HISTORY_COLUMNS} FROM check_history")
    trend = await rows(
        f"SELECT {_TREND_COLUMNS} FROM account_daily_trend_through(:through) "
        "ORDER BY account_id, day",
        through=through,
    )
    breakdown = await rows("SELECT * FROM account_daily_breakdown_through(:t)", t=through)
    episodes = await rows(
        "SELECT account_id, check_id, risk_level, failed_at, ended_at, resolved "
        "FROM failure_episodes ORDER BY check_id, failed_at"
    )
    resolve = await rows(
        "SELECT account_id, risk_level, resolved_failures, mean_hours_to_resolve "
        "FROM account_time_to_resolve"
    )
    return Dump(
        checks={row[0]: _lists_to_tuples(row[1:]) for row in checks},
        history={(row[0], row[1]): _lists_to_tuples(row[2:]) for row in history},
        trend=trend,
        breakdown=set(breakdown),
        episodes=episodes,
        time_to_resolve=set(resolve),
    )


def _lists_to_tuples(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(tuple(value) if isinstance(value, list) else value for value in row)


def read_all(deliveries: Iterable[Delivery]) -> list[Check]:
    """The checks the deliveries carry, skipping test messages."""
    return [read_check(d) for d in deliveries if d.kind == "check"]


def deduplicate(observations: Iterable[Check]) -> list[Check]:
    """One observation per (check id, event time): the one of highest precedence."""
    best: dict[tuple[str, datetime], Check] = {}
    for check in observations:
        key = (check.check_id, check.event_at)
        if key not in best or check.precedence > best[key].precedence:
            best[key] = check
    return sorted(best.values(), key=lambda c: (c.event_at, c.check_id))


def model(observations: Iterable[Check], through: date) -> Dump:
    """The tables as the definitions say they must be, computed the slow, obvious way."""
    ordered = deduplicate(observations)
    by_check: dict[str, list[Check]] = {}
    for check in ordered:
        by_check.setdefault(check.check_id, []).append(check)
    episodes = [e for runs in by_check.values() for e in _episodes(runs)]
    return Dump(
        checks={check_id: _check_row(runs) for check_id, runs in by_check.items()},
        history={(c.check_id, c.event_at): _history_row(c) for c in ordered},
        trend=_trend(by_check, through),
        breakdown=_breakdown(by_check, through),
        episodes=sorted(
            ((e[0], e[1], e[2], e[3], e[4], e[5]) for e in episodes), key=lambda e: (e[1], e[3])
        ),
        time_to_resolve=_time_to_resolve(episodes),
    )


def _check_row(runs: list[Check]) -> tuple[Any, ...]:
    last = runs[-1]
    since = last.event_at
    for check in reversed(runs):
        if check.status != last.status:
            break
        since = check.event_at
    return (
        last.account_id,
        last.status,
        last.risk_level,
        last.rule_id,
        last.service,
        last.region,
        last.resource,
        last.categories,
        last.compliances,
        last.tags,
        last.not_scored,
        last.suppressed,
        runs[0].event_at,
        since,
        last.event_at,
        last.body_sha256,
        last.message,
    )


def _history_row(check: Check) -> tuple[Any, ...]:
    return (
        check.status,
        check.risk_level,
        check.counted,
        check.categories,
        check.compliances,
        check.body_sha256,
    )


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _failing(check: Check | None) -> bool:
    return check is not None and check.counted and check.status == "FAILURE"


def _states(by_check: dict[str, list[Check]], account: str, day: date) -> list[Check]:
    states = []
    for runs in by_check.values():
        seen = [c for c in runs if c.account_id == account and _day(c.event_at) <= day]
        if seen:
            states.append(seen[-1])
    return states


def _accounts(by_check: dict[str, list[Check]]) -> dict[str, date]:
    first: dict[str, date] = {}
    for runs in by_check.values():
        account, day = runs[0].account_id, _day(runs[0].event_at)
        first[account] = min(first.get(account, day), day)
    return first


def _days(first: date, through: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((through - first).days + 1)]


def _score(passing: int, failing: int) -> Decimal | None:
    if passing + failing == 0:
        return None
    exact = Decimal(passing * 100) / Decimal(passing + failing)
    return exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _moves(by_check: dict[str, list[Check]], account: str, day: date) -> tuple[int, int, bool]:
    new_failures = resolved = 0
    has_events = False
    for runs in by_check.values():
        for previous, check in zip([None, *runs], runs, strict=False):
            if check.account_id != account or _day(check.event_at) != day:
                continue
            has_events = True
            new_failures += _failing(check) and not _failing(previous)
            resolved += check.counted and check.status == "SUCCESS" and _failing(previous)
    return new_failures, resolved, has_events


def _trend(by_check: dict[str, list[Check]], through: date) -> list[tuple[Any, ...]]:
    rows = []
    for account, first in sorted(_accounts(by_check).items()):
        for day in _days(first, through):
            states = _states(by_check, account, day)
            failing = [c for c in states if _failing(c)]
            passing = sum(c.counted and c.status == "SUCCESS" for c in states)
            excluded = sum(not c.counted for c in states)
            new_failures, resolved, has_events = _moves(by_check, account, day)
            by_risk = [sum(c.risk_level == level for c in failing) for level in RISK_LEVELS]
            score = _score(passing, len(failing))
            counts = (len(failing), passing, excluded, score, new_failures, resolved)
            rows.append((account, day, has_events, *counts, *by_risk))
    return rows


def _dimensions(check: Check) -> list[tuple[str, str]]:
    fixed = [
        ("risk_level", check.risk_level),
        ("service", check.service),
        ("region", check.region),
        ("rule", check.rule_id),
    ]
    return (
        fixed
        + [("category", value) for value in check.categories]
        + [("compliance", value) for value in check.compliances]
    )


def _breakdown(by_check: dict[str, list[Check]], through: date) -> set[tuple[Any, ...]]:
    rows: set[tuple[Any, ...]] = set()
    for account, first in _accounts(by_check).items():
        for day in _days(first, through):
            counts: dict[tuple[str, str], list[int]] = {}
            for check in _states(by_check, account, day):
                if check.counted:
                    for key in _dimensions(check):
                        pair = counts.setdefault(key, [0, 0])
                        pair[0 if check.status == "FAILURE" else 1] += 1
            rows |= {(account, day, d, v, f, p) for (d, v), (f, p) in counts.items()}
    return rows


def _episodes(runs: list[Check]) -> list[tuple[Any, ...]]:
    """(account, check, risk, failed_at, ended_at, resolved) for each failure of one check."""
    episodes: list[tuple[Any, ...]] = []
    start: Check | None = None
    for previous, check in zip([None, *runs], runs, strict=False):
        if _failing(check) and not _failing(previous):
            start = check
        elif start is not None and not _failing(check):
            resolved = check.counted and check.status == "SUCCESS"
            episodes.append(_episode(start, check.event_at, resolved))
            start = None
    if start is not None:
        episodes.append(_episode(start, None, False))
    return episodes


def _episode(start: Check, ended_at: datetime | None, resolved: bool) -> tuple[Any, ...]:
    return (start.account_id, start.check_id, start.risk_level, start.event_at, ended_at, resolved)


def _time_to_resolve(episodes: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    groups: dict[tuple[str, str], list[timedelta]] = {}
    for account, _, risk, failed_at, ended_at, resolved in episodes:
        if resolved:
            groups.setdefault((account, risk), []).append(ended_at - failed_at)
    rows = set()
    for (account, risk), durations in groups.items():
        micros = sum((Decimal(d // timedelta(microseconds=1)) for d in durations), Decimal(0))
        seconds = micros / 1_000_000 / len(durations)
        hours = (seconds / 3600).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        rows.add((account, risk, len(durations), hours))
    return rows
