"""The alerts reaction end to end: real edge, real broker, real Postgres, a loopback receiver."""

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from conformity_pipeline.errors import ConfigError
from conformity_pipeline.settings import Settings
from consumers import registry
from consumers.alert_sender import AlertSender, SendPolicy
from consumers.alerts import Alerts, failure_of, slack_message
from consumers.delivery import Delivery, UnreadableRecord
from tests import builders
from tests.builders import RunningPipeline
from tests.conftest import SettingsFactory
from tests.fixtures import fixtures_dir
from tests.kafka_helpers import eventually

# Quick retries, so a refused first attempt is retried within the test's patience.
FAST = SendPolicy(
    attempts=4, first_wait=0.05, max_wait=0.2, timeout_seconds=5, poll_seconds=0.1, batch=10
)
SEQUENCE = (fixtures_dir() / "sequence-one-account.jsonl").read_bytes().splitlines()
FIXED_NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@dataclass
class Receiver:
    """A Slack-like incoming webhook on a loopback port that refuses its first `refusals` posts."""

    refusals: int = 1
    status: int = 500
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None

    async def handle(self, request: Request) -> Response:
        self.posts.append((request.headers.get("idempotency-key", ""), await request.json()))
        if len(self.posts) <= self.refusals:
            return PlainTextResponse("try again", self.status)
        return PlainTextResponse("ok")

    @property
    def accepted(self) -> list[tuple[str, dict[str, Any]]]:
        return self.posts[self.refusals :]

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/alerts"

    async def start(self) -> None:
        app = Starlette(routes=[Route("/hooks/alerts", self.handle, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        assert self.server is not None and self.task is not None
        self.server.should_exit = True
        await self.task


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def sync_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def alert_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT check_id, state, attempts, idempotency_key FROM alerts ORDER BY 1")
            )
        )


class Stack(RunningPipeline):
    """The edge and the alerts consumer (its sender started with it) in this process."""

    def __init__(self, settings: Settings, alerts: Alerts) -> None:
        super().__init__(settings, ["alerts"])
        self.alerts = alerts

    async def post(self, body: bytes) -> httpx.Response:
        answer = await super().post(body)
        assert answer.status_code == 202, answer.text
        return answer


def severe_failures(lines: list[bytes]) -> set[str]:
    """Check ids of the EXTREME or VERY_HIGH failures among `lines` (what must be alerted)."""
    documents = [json.loads(line) for line in lines]
    return {
        doc["id"]
        for doc in documents
        if doc["status"] == "FAILURE" and doc["riskLevel"] in ("EXTREME", "VERY_HIGH")
    }


async def test_each_new_severe_failure_is_posted_once_despite_a_refused_attempt(
    make_settings: SettingsFactory,
    receiver: Receiver,
    sync_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alerts = Alerts(webhook_url=receiver.url, policy=FAST)
    monkeypatch.setitem(registry.REACTIONS, "alerts", lambda: alerts)
    stack = Stack(make_settings(), alerts)
    await stack.start()
    try:
        for line in SEQUENCE:
            await stack.post(line)
        await stack.post((fixtures_dir() / "test-message.txt").read_bytes())
        expected = severe_failures(SEQUENCE)
        await eventually(lambda: len(receiver.accepted) >= len(expected))
        assert await stack.consumers.drain(30)
        await asyncio.sleep(1)  # long enough for any extra post to show
    finally:
        await stack.stop()

    assert expected == {
        "ccc:Hk4Lp9sWd:S3-001:S3:us-east-1:northwind-public-assets",
        "ccc:Hk4Lp9sWd:IAM-038:IAM:global:arn:aws:iam::210987654321:role/etl-runner",
    }
    assert len(receiver.accepted) == len(expected)
    refused_key, _ = receiver.posts[0]
    assert sum(key == refused_key for key, _ in receiver.posts) == 2, "the retry reuses its key"
    rows = alert_rows(sync_engine)
    assert {row.check_id for row in rows} == expected
    assert all(row.state == "sent" for row in rows)
    assert sorted(row.attempts for row in rows) == [1, 2]
    assert all(body["text"].startswith(":rotating_light:") for _, body in receiver.accepted)


async def test_redelivery_and_resent_bodies_post_nothing_again(
    make_settings: SettingsFactory,
    receiver: Receiver,
    sync_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver.refusals = 0
    alerts = Alerts(webhook_url=receiver.url, policy=FAST)
    monkeypatch.setitem(registry.REACTIONS, "alerts", lambda: alerts)
    settings = make_settings()
    first = Stack(settings, alerts)
    await first.start()
    try:
        for line in SEQUENCE:
            await first.post(line)
        await eventually(lambda: len(receiver.accepted) == 2)
        for line in SEQUENCE:  # Conformity resending: new event ids, the same bodies
            await first.post(line)
        assert await first.consumers.drain(30)
    finally:
        await first.stop()

    # A new consumer group reads the whole topic again: every record is redelivered.
    again = Stack(
        make_settings(kafka_consumer_group_prefix=f"again-{uuid.uuid4().hex[:8]}"), alerts
    )
    await again.start()
    try:
        assert await again.consumers.drain(30)
        await asyncio.sleep(1)
    finally:
        await again.stop()

    assert len(receiver.posts) == 2
    assert len(alert_rows(sync_engine)) == 2


def delivery(document: dict[str, Any] | bytes, kind: str = "check") -> Delivery:
    return builders.delivery(document, received_at=FIXED_NOW, kind=kind)


def check(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = json.loads(
        (fixtures_dir() / "failure-ec2-ssh-cloudone.json").read_text()
    )
    return base | fields


@pytest.mark.parametrize(
    ("fields", "alerted"),
    [
        ({"riskLevel": "EXTREME"}, True),
        ({"riskLevel": "VERY_HIGH"}, True),
        ({"riskLevel": "HIGH"}, False),
        ({"riskLevel": "LOW"}, False),
        ({"riskLevel": "EXTREME", "status": "SUCCESS"}, False),
    ],
    ids=["extreme", "very-high", "high", "low", "extreme-success"],
)
def test_only_extreme_and_very_high_failures_are_alerted(
    fields: dict[str, Any], alerted: bool
) -> None:
    assert (failure_of(delivery(check(**fields))) is not None) is alerted


def test_the_channel_test_message_is_not_alerted() -> None:
    assert failure_of(delivery(b"Test Message from Cloud Conformity", kind="test")) is None


def test_a_repeat_of_the_same_failure_has_the_same_key_and_a_new_failure_a_new_one() -> None:
    first = failure_of(delivery(check(riskLevel="EXTREME")))
    repeat = failure_of(delivery(check(riskLevel="EXTREME", message="reworded")))
    later = failure_of(delivery(check(riskLevel="EXTREME", lastStatusUpdateDate=1733137200000)))

    assert first is not None and repeat is not None and later is not None
    assert first.row()["idempotency_key"] == repeat.row()["idempotency_key"]
    assert first.failure_key != later.failure_key


def test_a_failure_without_dates_is_keyed_by_its_body() -> None:
    document = check(riskLevel="EXTREME")
    del document["lastStatusUpdateDate"], document["failureDiscoveryDate"]
    given = delivery(document)
    failure = failure_of(given)
    assert failure is not None
    assert failure.failure_key == "body:" + hashlib.sha256(given.body).hexdigest()
    assert failure.failing_since is None


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", json.dumps(check(riskLevel="EXTREME", id=None)).encode()],
    ids=["not-json", "not-an-object", "failing-without-id"],
)
def test_unreadable_bodies_are_rejected_for_the_dead_letters(body: bytes) -> None:
    with pytest.raises(UnreadableRecord):
        failure_of(delivery(body))


def test_the_message_escapes_slack_markup() -> None:
    document = check(riskLevel="EXTREME", message="a <b> & c", ruleTitle="x>y")
    message = slack_message(document)["text"]
    assert "a &lt;b&gt; &amp; c" in message and "x&gt;y" in message
    assert "<https://www.trendmicro.com/" in message and "|How to resolve>" in message


async def test_old_failures_are_skipped_when_a_new_group_reads_history(database_url: str) -> None:
    engine = create_async_engine(database_url)
    alerts = Alerts(max_age=timedelta(hours=1), clock=lambda: FIXED_NOW + timedelta(hours=2))
    try:
        async with engine.begin() as connection:
            rejected = await alerts.apply(connection, [delivery(check(riskLevel="EXTREME"))])
        async with engine.connect() as connection:
            count = (await connection.execute(text("SELECT count(*) FROM alerts"))).scalar()
    finally:
        await engine.dispose()
    assert rejected == [] and count == 0


async def insert_pending(database_url: str, **overrides: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await Alerts(max_age=None).apply(connection, [delivery(check(riskLevel="EXTREME"))])
            if overrides:
                sets = ", ".join(f"{name} = {value}" for name, value in overrides.items())
                await connection.execute(text(f"UPDATE alerts SET {sets}"))
    finally:
        await engine.dispose()


async def send_once(database_url: str, url: str) -> int:
    engine = create_async_engine(database_url)
    sender = AlertSender(engine, url, FAST)
    try:
        return await sender.send_due()
    finally:
        await sender.stop()
        await engine.dispose()


async def test_a_refusal_that_retrying_cannot_change_marks_the_alert_failed(
    database_url: str, receiver: Receiver, sync_engine: Engine
) -> None:
    receiver.refusals, receiver.status = 100, 404
    await insert_pending(database_url)

    assert await send_once(database_url, receiver.url) == 1
    assert await send_once(database_url, receiver.url) == 0

    (row,) = alert_rows(sync_engine)
    assert (row.state, row.attempts, len(receiver.posts)) == ("failed", 1, 1)


async def test_exhausted_retries_put_the_alert_back_for_a_later_pass(
    database_url: str, receiver: Receiver, sync_engine: Engine
) -> None:
    receiver.refusals = 100
    await insert_pending(database_url)

    assert await send_once(database_url, receiver.url) == 1

    (row,) = alert_rows(sync_engine)
    assert (row.state, row.attempts, len(receiver.posts)) == ("pending", FAST.attempts, 4)
    with sync_engine.connect() as connection:
        later = connection.execute(text("SELECT next_attempt_at > now() FROM alerts")).scalar()
    assert later


async def test_a_stale_claim_of_a_dead_sender_is_posted_again_with_the_same_key(
    database_url: str, receiver: Receiver, sync_engine: Engine
) -> None:
    receiver.refusals = 0
    await insert_pending(database_url, state="'sending'", claimed_at="now() - interval '1 day'")
    fresh_claim = "now() - interval '1 second'"

    assert await send_once(database_url, receiver.url) == 1
    (row,) = alert_rows(sync_engine)
    assert row.state == "sent"
    assert receiver.posts[0][0] == str(row.idempotency_key)

    with sync_engine.begin() as connection:
        connection.execute(
            text(f"UPDATE alerts SET state = 'sending', claimed_at = {fresh_claim}")
        )
    assert await send_once(database_url, receiver.url) == 0, "a live claim is left alone"


async def test_a_stopping_sender_hands_back_what_it_claimed_unposted(
    database_url: str, receiver: Receiver, sync_engine: Engine
) -> None:
    await insert_pending(database_url)
    engine = create_async_engine(database_url)
    sender = AlertSender(engine, receiver.url, FAST)
    try:
        await sender.stop()
        assert await sender.send_due() == 1
    finally:
        await engine.dispose()

    (row,) = alert_rows(sync_engine)
    assert (row.state, row.attempts, receiver.posts) == ("pending", 0, [])


async def test_the_alerts_consumer_refuses_to_start_without_a_webhook_url(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    engine = create_async_engine(settings.sqlalchemy_url)
    try:
        with pytest.raises(ConfigError, match="ALERT_WEBHOOK_URL"):
            await Alerts().start(engine, settings)
    finally:
        await engine.dispose()


def test_a_stale_limit_shorter_than_a_pass_is_refused() -> None:
    with pytest.raises(ConfigError, match="stale-claim"):
        SendPolicy(attempts=5, timeout_seconds=10, max_wait=30, stale_claim_seconds=100)


def test_the_guide_names_the_example_and_its_migration() -> None:
    root = Path(__file__).resolve().parents[1]
    guide = (root / "docs" / "new-reaction.md").read_text()
    for path in (
        "consumers/alerts.py",
        "consumers/alert_sender.py",
        "migrations/versions/0003_alerts.py",
    ):
        assert (root / path).is_file() and path in guide
