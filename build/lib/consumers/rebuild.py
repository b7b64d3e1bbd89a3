"""Recomputing the check tables and the trends from the archive, while ingestion goes on.

The rebuild reads every archived delivery of a check (`webhook_deliveries` joined to its body in
`webhook_events`), account by account, and merges it into `check_history` and `checks` the way
the `checks` consumer does, overwriting rows equal to what it reads so that a newer reading of
the same bodies takes effect. It then rewrites every trend snapshot of the account.

Each step is a short transaction holding the account's advisory lock, so the `checks` consumer
keeps running: it waits only while the account it wants is being written. Nothing is deleted
from `check_history`: the archive runs in its own consumer group, so an observation may reach
the history before it reaches `webhook_events`, and deleting it would lose it.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumers.checks import Check, parse_check
from consumers.delivery import UnreadableRecord
from consumers.history import lock_accounts, write_checks
from consumers.trends import recompute_account

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]

# A page cursor before every archived event: (received_at, body_sha256).
_BEFORE_EVERYTHING = (datetime.min.replace(tzinfo=UTC), "")

_ACCOUNTS = text(
    """
    SELECT account_id FROM webhook_events WHERE kind = 'check' AND account_id IS NOT NULL
    UNION
    SELECT account_id FROM checks
    ORDER BY account_id
    """
)

_COUNT_EVENTS = text(
    """
    SELECT count(*) AS events FROM webhook_events
    WHERE kind = 'check' AND account_id = ANY(CAST(:accounts AS text[]))
    """
)

_EVENT_PAGE = text(
    """
    SELECT e.body_sha256, e.received_at, e.document
    FROM webhook_events e
    WHERE e.kind = 'check' AND e.account_id = :account_id
      AND (e.received_at, e.body_sha256) > (:after_at, :after_sha)
    ORDER BY e.received_at, e.body_sha256
    LIMIT :limit
    """
)

_DELIVERIES = text(
    """
    SELECT body_sha256, received_at FROM webhook_deliveries
    WHERE body_sha256 = ANY(CAST(:shas AS text[]))
    """
)


@dataclass(frozen=True, slots=True)
class RebuildResult:
    """What a rebuild did: accounts rewritten, archived events read, and unreadable ones."""

    accounts: int
    events: int
    unreadable: int


@dataclass(frozen=True, slots=True)
class _Page:
    checks: list[Check]
    events: int
    unreadable: int
    last: tuple[datetime, str] | None


async def list_accounts(engine: AsyncEngine) -> list[str]:
    """Every account with archived checks or with rows in `checks`, sorted."""
    async with engine.connect() as connection:
        return [row.account_id for row in await connection.execute(_ACCOUNTS)]


async def count_events(engine: AsyncEngine, accounts: Sequence[str]) -> int:
    """How many archived check bodies the accounts have (the length of the progress bar)."""
    async with engine.connect() as connection:
        result = await connection.execute(_COUNT_EVENTS, {"accounts": list(accounts)})
        return int(result.scalar_one())


async def rebuild(
    engine: AsyncEngine,
    accounts: Sequence[str],
    *,
    page_size: int = 500,
    on_progress: Progress | None = None,
) -> RebuildResult:
    """Rebuild `accounts` one after the other; `on_progress` gets each page's event count.

    Safe to run while the consumers run, and to run again: the result is the same rows as
    processing the archive live, merged with whatever the consumer has stored meanwhile.
    """
    events = unreadable = 0
    for account_id in accounts:
        read, skipped = await rebuild_account(
            engine, account_id, page_size=page_size, on_progress=on_progress
        )
        events, unreadable = events + read, unreadable + skipped
    return RebuildResult(len(accounts), events, unreadable)


async def rebuild_account(
    engine: AsyncEngine,
    account_id: str,
    *,
    page_size: int = 500,
    on_progress: Progress | None = None,
) -> tuple[int, int]:
    """Merge one account's archive page by page, then rewrite its snapshots.

    Returns the numbers of events read and of events that are not readable checks.
    """
    events = unreadable = 0
    after = _BEFORE_EVERYTHING
    while True:
        async with engine.begin() as connection:
            await lock_accounts(connection, [account_id])
            page = await _read_page(connection, account_id, after, page_size)
            await write_checks(connection, page.checks, refresh=True)
        events, unreadable = events + page.events, unreadable + page.unreadable
        if on_progress is not None:
            on_progress(page.events)
        if page.last is None:
            break
        after = page.last
    async with engine.begin() as connection:
        await lock_accounts(connection, [account_id])
        days = await recompute_account(connection, account_id)
    logger.info(
        "Rebuilt an account",
        extra={"account": account_id, "events": events, "unreadable": unreadable, "days": days},
    )
    return events, unreadable


async def _read_page(
    connection: AsyncConnection, account_id: str, after: tuple[datetime, str], size: int
) -> _Page:
    parameters = {"account_id": account_id, "after_at": after[0], "after_sha": after[1]}
    rows = (await connection.execute(_EVENT_PAGE, parameters | {"limit": size})).all()
    received = await _receipts(connection, [row.body_sha256 for row in rows])
    checks: list[Check] = []
    unreadable = 0
    for row in rows:
        readings = _read_event(row.document, row.body_sha256, received.get(row.body_sha256, []))
        if readings is None:
            unreadable += 1
        else:
            checks += readings
    last = (rows[-1].received_at, rows[-1].body_sha256) if len(rows) == size else None
    return _Page(checks, len(rows), unreadable, last)


async def _receipts(connection: AsyncConnection, shas: list[str]) -> dict[str, list[datetime]]:
    """When each body was delivered; one observation per delivery when it carries no time."""
    received: dict[str, list[datetime]] = {}
    if shas:
        for row in await connection.execute(_DELIVERIES, {"shas": shas}):
            received.setdefault(row.body_sha256, []).append(row.received_at)
    return received


def _read_event(document: Any, body_sha256: str, received: list[datetime]) -> list[Check] | None:
    try:
        return [parse_check(document, received_at=at, body_sha256=body_sha256) for at in received]
    except UnreadableRecord as error:
        logger.warning(
            "Skipped an archived check that cannot be read; the dead letters hold it",
            extra={"body_sha256": body_sha256, "reason": str(error)},
        )
        return None
