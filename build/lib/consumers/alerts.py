"""The alerts reaction: each new EXTREME or VERY_HIGH failure is posted once to a webhook.

It is the worked example of `docs/new-reaction.md`. Its parts:

- `Alerts.apply` runs inside the consumer's Postgres transaction, which Kafka may redeliver. It
  only inserts one outbox row per failure into `alerts` (migration 0003); the row's key makes
  the insert idempotent, so a redelivered or resent failure changes nothing.
- `AlertSender` (in `consumers/alert_sender.py`) posts the outbox outside that transaction,
  retrying with backoff, and records in the same row that the alert went out.

A failure is identified by its check id and the moment Conformity says the check started
failing: `lastStatusUpdateDate`, else `failureDiscoveryDate` (epoch milliseconds). The same
failure notified again has the same moment, so it is not alerted again; a check that is
resolved and then fails again gets a new moment, and a new alert. A sender that gives neither
date is keyed by the body's SHA-256, so only an identical resend is recognised.
"""

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, Table, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conformity_pipeline.errors import ConfigError
from conformity_pipeline.settings import Settings
from consumers.alert_sender import AlertSender, SendPolicy
from consumers.delivery import Delivery, UnreadableRecord
from consumers.runtime import Rejection

logger = logging.getLogger(__name__)

ALERTING_RISK_LEVELS = frozenset({"EXTREME", "VERY_HIGH"})

# Fixed, so that the idempotency key of a failure is the same in every process and release.
_KEY_NAMESPACE = uuid.UUID("5f0b7d1e-3c52-4f7e-9a41-0c6e2b8d9a13")

# The columns this reaction writes; migration 0003 owns the table and its defaults.
alerts = Table(
    "alerts",
    MetaData(),
    Column("check_id", Text, primary_key=True),
    Column("failure_key", Text, primary_key=True),
    Column("failing_since", DateTime(timezone=True)),
    Column("account_id", Text),
    Column("rule_id", Text),
    Column("risk_level", Text),
    Column("event_id", Uuid),
    Column("idempotency_key", Uuid),
    Column("payload", JSONB),
)

_INSERT = insert(alerts).on_conflict_do_nothing(index_elements=["check_id", "failure_key"])

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure worth an alert: its identity and the message to post."""

    check_id: str
    failure_key: str
    failing_since: datetime | None
    account_id: str
    rule_id: str | None
    risk_level: str
    event_id: uuid.UUID
    payload: dict[str, Any]

    def row(self) -> dict[str, Any]:
        """The outbox row for this failure."""
        key = uuid.uuid5(_KEY_NAMESPACE, f"{self.check_id}\n{self.failure_key}")
        return {
            "check_id": self.check_id,
            "failure_key": self.failure_key,
            "failing_since": self.failing_since,
            "account_id": self.account_id,
            "rule_id": self.rule_id,
            "risk_level": self.risk_level,
            "event_id": self.event_id,
            "idempotency_key": key,
            "payload": self.payload,
        }


def failure_of(delivery: Delivery) -> Failure | None:
    """The failure `delivery` reports, or None when it deserves no alert.

    Raises UnreadableRecord for a body that is not a JSON object, or for an alerting failure
    without the `id` or `accountId` an alert needs.
    """
    if delivery.kind != "check":
        return None
    document = delivery.document()
    if not isinstance(document, dict):
        raise UnreadableRecord(
            "The body is JSON but not an object; Conformity sends one check object per request.",
            reason="body-not-object",
        )
    risk = document.get("riskLevel")
    if document.get("status") != "FAILURE" or risk not in ALERTING_RISK_LEVELS:
        return None
    check_id, account_id = document.get("id"), document.get("accountId")
    if not isinstance(check_id, str) or not isinstance(account_id, str):
        raise UnreadableRecord(
            "The failing check has no text `id` or `accountId`, so it cannot be alerted once.",
            reason="missing-field",
        )
    failing_since = _failing_since(document)
    return Failure(
        check_id=check_id,
        failure_key=_failure_key(failing_since, delivery),
        failing_since=failing_since,
        account_id=account_id,
        rule_id=_text(document, "ruleId"),
        risk_level=str(risk),
        event_id=delivery.event_id,
        payload=slack_message(document),
    )


def _failing_since(document: dict[str, Any]) -> datetime | None:
    for name in ("lastStatusUpdateDate", "failureDiscoveryDate"):
        value = document.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    return None


def _failure_key(failing_since: datetime | None, delivery: Delivery) -> str:
    if failing_since is None:
        return f"body:{delivery.body_sha256}"
    return failing_since.isoformat()


def _text(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value if isinstance(value, str) and value else None


def slack_message(document: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible message (``{"text": ...}`` in mrkdwn) describing a failing check."""
    resource = _text(document, "resource")
    message = _text(document, "message")
    guide = _text(document, "resolutionPageUrl") or _text(document, "resolutionPageURL")
    lines = [
        _headline(document),
        _place(document),
        f"resource `{_escape(resource)}`" if resource else None,
        _escape(message) if message else None,
        f"<{_escape(guide)}|How to resolve>" if guide else None,
    ]
    return {"text": "\n".join(line for line in lines if line)}


def _headline(document: dict[str, Any]) -> str:
    rule = _escape(_text(document, "ruleId") or "?")
    title = _text(document, "ruleTitle")
    headline = f":rotating_light: *{_escape(document['riskLevel'])}* failure: *{rule}*"
    return f"{headline} {_escape(title)}" if title else headline


def _place(document: dict[str, Any]) -> str:
    parts = [f"account `{_escape(document['accountId'])}`"]
    parts += [
        _escape(part) for part in (_text(document, "service"), _text(document, "region")) if part
    ]
    return " · ".join(parts)


def _escape(value: object) -> str:
    """Slack's mrkdwn gives &, < and > a meaning; these are their escapes."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Alerts:
    """Reaction that queues one alert per new EXTREME or VERY_HIGH failure (see the module).

    `webhook_url` overrides ALERT_WEBHOOK_URL and `policy` the sender's defaults. `max_age` skips
    failures the edge received longer ago than that, so a new consumer group reading the topic's
    history does not post every old failure; `clock` tells the time for that comparison.
    """

    name = "alerts"

    def __init__(
        self,
        webhook_url: str | None = None,
        policy: SendPolicy | None = None,
        max_age: timedelta | None = timedelta(days=1),
        clock: Clock = utc_now,
    ) -> None:
        self.webhook_url = webhook_url
        self.policy = policy
        self.max_age = max_age
        self.clock = clock
        self.sender: AlertSender | None = None

    async def apply(
        self, connection: AsyncConnection, deliveries: Sequence[Delivery]
    ) -> Sequence[Rejection]:
        """Insert an outbox row per new alerting failure; idempotent under redelivery."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        rejections: list[Rejection] = []
        for delivery in deliveries:
            try:
                failure = failure_of(delivery)
            except UnreadableRecord as error:
                rejections.append(Rejection.of(delivery, str(error)))
                continue
            if failure is not None and self._recent(delivery):
                rows.setdefault((failure.check_id, failure.failure_key), failure.row())
        if rows:
            # Sorted, so that concurrent transactions take the row locks in the same order.
            await connection.execute(_INSERT, [rows[key] for key in sorted(rows)])
        return rejections

    def _recent(self, delivery: Delivery) -> bool:
        if self.max_age is None or delivery.received_at >= self.clock() - self.max_age:
            return True
        logger.info(
            "Skipped a failure received too long ago to alert on",
            extra={"consumer": self.name, "event_id": str(delivery.event_id)},
        )
        return False

    async def start(self, engine: AsyncEngine, settings: Settings) -> None:
        """Start posting the outbox (once, however often called); ConfigError without a URL."""
        if self.sender is not None:
            return
        configured = settings.alert_webhook_url
        url = self.webhook_url or (configured.get_secret_value() if configured else None)
        if not url:
            raise ConfigError(
                "ALERT_WEBHOOK_URL is not set; set it to the incoming-webhook URL (Slack or "
                "compatible) that should receive alerts, or do not run the alerts consumer."
            )
        self.sender = AlertSender(engine, url, self.policy)
        await self.sender.start()

    async def stop(self) -> None:
        """Stop posting; alerts not yet sent stay in the outbox for the next start."""
        if self.sender is not None:
            await self.sender.stop()
            self.sender = None
