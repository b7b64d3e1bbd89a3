"""The `checks` reaction: current check state, check history and the account trends.

One batch is one transaction. It locks its accounts, adds each distinct observation to
`check_history`, moves `checks` forward to the newest observation of each check, and
recomputes the trend days those observations touch (`consumers.trends`).

Order does not matter. An observation is one row per (check id, event time); two different
bodies for the same check and time are settled by `Check.precedence` (FAILURE first, then the
body hash), so every order of arrival ends in the same rows. A late event never overwrites a
newer state, and a redelivered batch changes nothing.

Two processes of the same consumer group never work on one account at once: each transaction
first takes a transaction-scoped advisory lock per account, in one global order, so they
cannot deadlock and a trend day is never computed from half a batch.
"""

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from conformity_pipeline.tables import check_history, checks
from consumers.checks import Check, read_check
from consumers.delivery import Delivery, UnreadableRecord
from consumers.runtime import Rejection
from consumers.trends import refresh_trends

logger = logging.getLogger(__name__)

# The first key of every account lock, so these locks never meet another feature's locks.
_ACCOUNT_LOCK_SPACE = 0x43484B53

_LOCK_ACCOUNTS = text(
    "SELECT count(pg_advisory_xact_lock(:space, key)) FROM unnest(CAST(:keys AS integer[])) AS key"
)

_REFRESH_CHECK_TIMES = text(
    """
    UPDATE checks AS c SET
        first_seen_at = (
            SELECT min(h.event_at) FROM check_history h WHERE h.check_id = c.check_id
        ),
        status_since = (
            SELECT min(h.event_at) FROM check_history h
            WHERE h.check_id = c.check_id AND h.event_at > coalesce(
                (SELECT max(x.event_at) FROM check_history x
                 WHERE x.check_id = c.check_id AND x.status <> c.status),
                '-infinity'
            )
        )
    WHERE c.check_id = ANY(CAST(:check_ids AS text[]))
    """
)


@dataclass(frozen=True, slots=True, order=True)
class Change:
    """An observation that was added to `check_history` or replaced one at the same time."""

    account_id: str
    check_id: str
    event_at: datetime


def account_lock_key(account_id: str) -> int:
    """A stable 32-bit key for an account's advisory lock, the same in every process."""
    return int.from_bytes(hashlib.sha256(account_id.encode()).digest()[:4], "big", signed=True)


async def lock_accounts(connection: AsyncConnection, accounts: Iterable[str]) -> None:
    """Take each account's advisory lock until the transaction ends, in ascending key order.

    One global order means two transactions that share accounts wait for each other instead
    of deadlocking, even when two accounts happen to share a key.
    """
    keys = sorted({account_lock_key(account) for account in accounts})
    if keys:
        await connection.execute(_LOCK_ACCOUNTS, {"space": _ACCOUNT_LOCK_SPACE, "keys": keys})


def newest(checks: Iterable[Check], key: Callable[[Check], tuple[Any, ...]]) -> list[Check]:
    """The observation of highest precedence for each key, in key order."""
    best: dict[tuple[Any, ...], Check] = {}
    for check in checks:
        current = best.get(key(check))
        if current is None or check.precedence > current.precedence:
            best[key(check)] = check
    return [best[k] for k in sorted(best)]


async def write_checks(
    connection: AsyncConnection, observations: Sequence[Check], *, refresh: bool = False
) -> list[Change]:
    """Merge observations into `check_history` and `checks`; return what changed.

    The caller holds the accounts' locks. With `refresh`, an observation equal to the stored
    one is written again (a rebuild uses it to apply a newer reading of the same bodies).
    """
    if not observations:
        return []
    history_rows = newest(observations, lambda c: (c.check_id, c.event_at))
    result = await connection.execute(
        _history_upsert(refresh), [_history_row(c) for c in history_rows]
    )
    changes = sorted(Change(r.account_id, r.check_id, r.event_at) for r in result)
    state_rows = newest(observations, lambda c: (c.check_id,))
    await connection.execute(_checks_upsert(refresh), [_checks_row(c) for c in state_rows])
    changed_ids = sorted({change.check_id for change in changes})
    if changed_ids:
        await connection.execute(_REFRESH_CHECK_TIMES, {"check_ids": changed_ids})
    return changes


def _wins(new: ColumnElement[Any], old: ColumnElement[Any], refresh: bool) -> ColumnElement[bool]:
    return new >= old if refresh else new > old


def _history_upsert(refresh: bool) -> Executable:
    statement = insert(check_history)
    new, old = statement.excluded, check_history.c
    columns = [c.name for c in check_history.c if c.name not in ("check_id", "event_at")]
    return statement.on_conflict_do_update(
        index_elements=["check_id", "event_at"],
        set_={name: new[name] for name in columns if name != "counted"},
        where=_wins(
            tuple_(new.status == "FAILURE", new.body_sha256),
            tuple_(old.status == "FAILURE", old.body_sha256),
            refresh,
        ),
    ).returning(old.account_id, old.check_id, old.event_at)


def _checks_upsert(refresh: bool) -> Executable:
    statement = insert(checks)
    new, old = statement.excluded, checks.c
    fixed = ("check_id", "counted", "first_seen_at", "status_since")
    return statement.on_conflict_do_update(
        index_elements=["check_id"],
        set_={c.name: new[c.name] for c in checks.c if c.name not in fixed},
        where=_wins(
            tuple_(new.last_event_at, new.status == "FAILURE", new.body_sha256),
            tuple_(old.last_event_at, old.status == "FAILURE", old.body_sha256),
            refresh,
        ),
    )


def _history_row(check: Check) -> dict[str, Any]:
    return {
        "check_id": check.check_id,
        "event_at": check.event_at,
        "account_id": check.account_id,
        "status": check.status,
        "risk_level": check.risk_level,
        "rule_id": check.rule_id,
        "service": check.service,
        "region": check.region,
        "categories": list(check.categories),
        "compliances": list(check.compliances),
        "not_scored": check.not_scored,
        "suppressed": check.suppressed,
        "message": check.message,
        "body_sha256": check.body_sha256,
    }


def _checks_row(check: Check) -> dict[str, Any]:
    return {
        "check_id": check.check_id,
        "account_id": check.account_id,
        "organisation_id": check.organisation_id,
        "rule_id": check.rule_id,
        "rule_title": check.rule_title,
        "service": check.service,
        "region": check.region,
        "resource": check.resource,
        "status": check.status,
        "risk_level": check.risk_level,
        "message": check.message,
        "categories": list(check.categories),
        "compliances": list(check.compliances),
        "tags": list(check.tags),
        "not_scored": check.not_scored,
        "suppressed": check.suppressed,
        "resolution_page_url": check.resolution_page_url,
        "first_seen_at": check.event_at,
        "status_since": check.event_at,
        "last_event_at": check.event_at,
        "body_sha256": check.body_sha256,
        "document": dict(check.document),
    }


def group_by_account(changes: Iterable[Change]) -> dict[str, list[Change]]:
    """Changes per account, accounts in sorted order."""
    grouped: dict[str, list[Change]] = {}
    for change in sorted(changes):
        grouped.setdefault(change.account_id, []).append(change)
    return grouped


class CheckHistory:
    """Reaction keeping `checks`, `check_history` and the account trends (module docstring)."""

    name = "checks"

    async def apply(
        self, connection: AsyncConnection, deliveries: Sequence[Delivery]
    ) -> Sequence[Rejection]:
        """Apply the batch in the open transaction; idempotent, in any order of arrival.

        Channel test messages are skipped; a check that cannot be read is returned as a
        rejection naming the bad field, and the rest of the batch is stored.
        """
        observations, rejections = self._read(deliveries)
        await lock_accounts(connection, {check.account_id for check in observations})
        changes = await write_checks(connection, observations)
        accounts = group_by_account(changes)
        for account_id, account_changes in accounts.items():
            await refresh_trends(
                connection, account_id, [(c.check_id, c.event_at) for c in account_changes]
            )
        logger.debug(
            "Applied a batch of checks",
            extra={
                "consumer": self.name,
                "observations": len(observations),
                "changes": len(changes),
                "accounts": len(accounts),
            },
        )
        return rejections

    def _read(self, deliveries: Sequence[Delivery]) -> tuple[list[Check], list[Rejection]]:
        observations: list[Check] = []
        rejections: list[Rejection] = []
        for delivery in deliveries:
            if delivery.kind == "test":
                continue
            try:
                observations.append(read_check(delivery))
            except UnreadableRecord as error:
                rejections.append(Rejection.of(delivery, str(error)))
        return observations, rejections
