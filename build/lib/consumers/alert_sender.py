"""Posting the alerts outbox to an outbound webhook (Slack-compatible JSON), each alert once.

The sender runs beside the alerts consumer, never inside its Postgres transaction. One pass:

1. claim due rows (``pending``, or ``sending`` with a claim older than the stale limit) by
   setting ``sending`` and a fresh claim id, committed before any request is made;
2. post each row's payload with an ``Idempotency-Key`` header that is the same for every try of
   the same failure, retrying transient refusals (network errors, 408, 429, 5xx) with
   exponential backoff and jitter;
3. record the outcome in the same row: ``sent``; ``pending`` again with a later
   ``next_attempt_at`` when the tries ran out; ``failed`` when the receiver refused the request
   itself (another 4xx), which a retry would not change.

Delivery is exactly once except in one window: a crash after the receiver accepted a post and
before ``sent`` was written. The row then stays ``sending`` and is posted again, with the same
idempotency key, once its claim is stale. Receivers that honour that header drop the repeat;
Slack's incoming webhooks do not, so a crash in that window can repeat one message there.
Claiming with ``FOR UPDATE SKIP LOCKED`` lets several consumer replicas send side by side. A
sender asked to stop finishes the post in flight and hands its other claimed rows back unposted.
"""

import asyncio
import logging
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from conformity_pipeline.errors import ConfigError, DependencyError

logger = logging.getLogger(__name__)

_CLAIM = text(
    """
    UPDATE alerts SET state = 'sending', claim_id = :claim_id, claimed_at = now()
    WHERE (check_id, failure_key) IN (
        SELECT check_id, failure_key FROM alerts
        WHERE (state = 'pending' AND next_attempt_at <= now())
           OR (state = 'sending' AND claimed_at < now() - make_interval(secs => :stale))
        ORDER BY created_at, check_id, failure_key
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    RETURNING check_id, failure_key, idempotency_key, payload, created_at
    """
)

_RELEASE = text(
    "UPDATE alerts SET state = 'pending', claim_id = NULL "
    "WHERE claim_id = :claim_id AND state = 'sending'"
)

_OUTCOMES = {
    "sent": "state = 'sent', sent_at = now(), last_error = NULL",
    "retry": "state = 'pending', next_attempt_at = now() + make_interval(secs => :later), "
    "last_error = :error",
    "failed": "state = 'failed', last_error = :error",
}

# Only the claim that posted may record the outcome: a row re-claimed meanwhile is left alone.
_MARKS = {
    outcome: text(
        f"UPDATE alerts SET {assignments}, attempts = attempts + :tries, claim_id = NULL "
        "WHERE check_id = :check_id AND failure_key = :failure_key AND claim_id = :claim_id"
    )
    for outcome, assignments in _OUTCOMES.items()
}


class WebhookRefused(DependencyError):
    """The alert webhook did not accept a post; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class SendPolicy:
    """How hard and how often the sender tries.

    `attempts` posts per pass, waiting between `first_wait` and `max_wait` seconds (doubling,
    with jitter); when they run out the alert waits `retry_later_seconds` for the next pass.
    A claim older than `stale_claim_seconds` belongs to a sender that died, so it must be longer
    than any pass can last; the constructor refuses a shorter one.
    """

    attempts: int = 5
    first_wait: float = 1.0
    max_wait: float = 30.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 2.0
    retry_later_seconds: float = 300.0
    stale_claim_seconds: float = 600.0
    batch: int = 20

    def __post_init__(self) -> None:
        longest_pass = self.attempts * (self.timeout_seconds + self.max_wait)
        if self.stale_claim_seconds <= longest_pass:
            raise ConfigError(
                f"The alert sender's stale-claim limit ({self.stale_claim_seconds:g} s) must "
                f"exceed the longest pass ({longest_pass:g} s), or a slow pass could be posted "
                "twice; raise it or lower the attempts, timeout or maximum wait."
            )


@dataclass(frozen=True, slots=True)
class ClaimedAlert:
    """A row this sender claimed: where it is, what to post, and the key to post it with."""

    check_id: str
    failure_key: str
    idempotency_key: uuid.UUID
    payload: Mapping[str, Any]


class AlertSender:
    """Posts due alerts in a background task until `stop()`; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        webhook_url: str,
        policy: SendPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.engine = engine
        self.webhook_url = webhook_url
        self.policy = policy or SendPolicy()
        self._client = client or httpx.AsyncClient(timeout=self.policy.timeout_seconds)
        self._owns_client = client is None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start posting in the background."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="alert-sender")

    async def stop(self) -> None:
        """Finish the post in flight (no new tries), then stop; idempotent."""
        self._stopping.set()
        if self._task is not None:
            grace = self.policy.timeout_seconds + 5
            try:
                await asyncio.wait_for(self._task, grace)
            except TimeoutError:
                logger.warning("The alert sender did not stop in time; its claims go stale")
            self._task = None
        if self._owns_client:
            await self._client.aclose()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed = await self.send_due()
            except SQLAlchemyError as error:
                logger.warning(
                    "Postgres is unavailable to the alert sender; it tries again",
                    extra={"error": type(error).__name__},
                )
                claimed = 0
            except Exception:
                logger.exception("An alert pass failed; the next pass tries again")
                claimed = 0
            if not claimed:
                await self._sleep(self.policy.poll_seconds)

    async def send_due(self) -> int:
        """Claim the due alerts, post each, record each outcome; returns how many were claimed."""
        claim_id = uuid.uuid4()
        alerts = await self._claim(claim_id)
        for alert in alerts:
            if self._stopping.is_set():
                await self._release(claim_id)
                break
            await self._deliver(alert, claim_id)
        return len(alerts)

    async def _release(self, claim_id: uuid.UUID) -> None:
        """Hand back, unposted, the rows of this claim not delivered yet (when stopping)."""
        async with self.engine.begin() as connection:
            await connection.execute(_RELEASE, {"claim_id": claim_id})

    async def _claim(self, claim_id: uuid.UUID) -> list[ClaimedAlert]:
        values = {
            "claim_id": claim_id,
            "stale": self.policy.stale_claim_seconds,
            "batch": self.policy.batch,
        }
        async with self.engine.begin() as connection:
            rows = (await connection.execute(_CLAIM, values)).mappings().all()
        ordered = sorted(rows, key=lambda row: (row["created_at"], row["check_id"]))
        return [
            ClaimedAlert(
                row["check_id"], row["failure_key"], row["idempotency_key"], row["payload"]
            )
            for row in ordered
        ]

    async def _deliver(self, alert: ClaimedAlert, claim_id: uuid.UUID) -> None:
        tries = 0

        async def post_once() -> None:
            nonlocal tries
            tries += 1
            await self._post(alert)

        try:
            await self._retrying()(post_once)
        except WebhookRefused as error:
            outcome = "retry" if error.retryable else "failed"
            await self._record(outcome, alert, claim_id, tries, str(error))
            logger.warning(
                "An alert was not delivered",
                extra={"check_id": alert.check_id, "outcome": outcome, "error": str(error)},
            )
            return
        await self._record("sent", alert, claim_id, tries)
        logger.info("Sent an alert", extra={"check_id": alert.check_id, "tries": tries})

    def _retrying(self) -> AsyncRetrying:
        policy = self.policy
        return AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | _WhenSet(self._stopping),
            wait=wait_exponential_jitter(
                multiplier=policy.first_wait, max=policy.max_wait, jitter=policy.first_wait
            ),
            retry=retry_if_exception(_is_retryable),
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when the sender is asked to stop."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _post(self, alert: ClaimedAlert) -> None:
        headers = {"Idempotency-Key": str(alert.idempotency_key)}
        try:
            response = await self._client.post(
                self.webhook_url, json=dict(alert.payload), headers=headers
            )
        except httpx.HTTPError as error:
            # The URL is a secret (it authorises posting), so only the error's type is named.
            raise WebhookRefused(
                f"The alert webhook could not be reached ({type(error).__name__}); check "
                "ALERT_WEBHOOK_URL and the network.",
                retryable=True,
            ) from error
        if not response.is_success:
            status = response.status_code
            raise WebhookRefused(
                f"The alert webhook answered {status}; check ALERT_WEBHOOK_URL and the "
                "receiver's logs.",
                retryable=status in (408, 429) or status >= 500,
            )

    async def _record(
        self, outcome: str, alert: ClaimedAlert, claim_id: uuid.UUID, tries: int, error: str = ""
    ) -> None:
        values: dict[str, Any] = {
            "check_id": alert.check_id,
            "failure_key": alert.failure_key,
            "claim_id": claim_id,
            "tries": tries,
        }
        if outcome != "sent":
            values["error"] = error
        if outcome == "retry":
            values["later"] = self.policy.retry_later_seconds
        async with self.engine.begin() as connection:
            await connection.execute(_MARKS[outcome], values)


class _WhenSet(stop_base):
    """Stops retrying once an asyncio event is set (tenacity's own wants a threading.Event)."""

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, WebhookRefused) and error.retryable


def _log_retry(retry_state: RetryCallState) -> None:
    error = retry_state.outcome.exception() if retry_state.outcome else None
    logger.info(
        "Retrying an alert post",
        extra={"attempt": retry_state.attempt_number, "error": str(error)},
    )
