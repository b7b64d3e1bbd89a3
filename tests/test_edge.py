"""The HTTP edge on a real loopback port, writing to a real Tansu broker."""

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from conformity_pipeline.errors import ConfigError
from conformity_pipeline.local import start_broker
from conformity_pipeline.services import Edge, build_edge
from conformity_pipeline.settings import Settings, load_settings
from conformity_pipeline.topics import ensure_topics
from ingest.signature import sign
from tests.conftest import TOKEN, SettingsFactory
from tests.fixtures import fixtures_dir
from tests.kafka_helpers import read_topic

SIGNATURES = json.loads((fixtures_dir() / "signatures.json").read_text())
CASES = SIGNATURES["cases"]
TEST_MESSAGE = (fixtures_dir() / "test-message.txt").read_bytes()


async def start_edge(settings: Settings) -> Edge:
    await asyncio.to_thread(ensure_topics, settings)
    edge = build_edge(settings)
    await edge.start()
    return edge


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
async def edge(settings: Settings) -> AsyncIterator[Edge]:
    running = await start_edge(settings)
    yield running
    await running.stop()


def url(edge: Edge, path: str = "/webhooks/conformity") -> str:
    return f"http://127.0.0.1:{edge.port}{path}"


def signed(
    body: bytes, token: str = TOKEN, header: str = "X-TrendMicro-Signature"
) -> dict[str, str]:
    """A correctly signed request's headers; each test breaks one thing."""
    return {header: sign(body, token), "Content-Type": "application/json"}


async def post(edge: Edge, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url(edge), content=body, headers=headers)


async def topic_records(settings: Settings) -> list[Any]:
    assert settings.kafka_bootstrap_servers is not None
    return await read_topic(settings.kafka_bootstrap_servers, settings.kafka_checks_topic)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
@pytest.mark.parametrize("header", SIGNATURES["headers"])
async def test_signature_cases_through_the_edge(
    edge: Edge, settings: Settings, case: dict[str, Any], header: str
) -> None:
    body = case["body"].encode()
    answer = await post(edge, body, {header: case["signature"]})

    records = await topic_records(settings)
    if case["expect"] == "accept":
        assert answer.status_code == 202
        assert [r.value for r in records] == [body]
        assert answer.json() == {"event_id": dict(records[0].headers)["event-id"].decode()}
    else:
        assert answer.status_code == 401
        assert answer.json()["error"] == "bad-signature"
        assert records == []


async def test_record_carries_key_and_headers(edge: Edge, settings: Settings) -> None:
    body = (fixtures_dir() / "failure-ec2-ssh-cloudone.json").read_bytes()
    answer = await post(edge, body, {"x-trendmicro-signature": sign(body, TOKEN)})

    [record] = await topic_records(settings)
    headers = {name: value.decode() for name, value in record.headers}
    assert answer.status_code == 202
    assert record.value == body
    assert record.key == b"6d1f0c2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
    assert headers["event-id"] == answer.json()["event_id"]
    assert uuid.UUID(headers["event-id"]).version == 4
    assert datetime.fromisoformat(headers["received-at"]).utcoffset() == timedelta(0)
    assert headers["signature-form"] == "raw"
    assert headers["body-sha256"] == hashlib.sha256(body).hexdigest()
    assert headers["kind"] == "check"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"X-TrendMicro-Signature": ""}, "empty"),
        ({"X-TrendMicro-Signature": "ab" * 31}, "short"),
        ({"X-TrendMicro-Signature": "ab" * 33}, "long"),
        ({"X-TrendMicro-Signature": "é" * 64}, "non-ascii"),
        ({"X-TrendMicro-Signature": sign(b"other", TOKEN)}, "other-body"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_bad_signature_is_401_and_nothing_is_written(
    edge: Edge, settings: Settings, headers: dict[str, str], reason: str
) -> None:
    body = (fixtures_dir() / "failure-s3-public-read.json").read_bytes()
    encoded = {k: v.encode("utf-8") for k, v in headers.items()}
    async with httpx.AsyncClient() as client:
        answer = await client.post(url(edge), content=body, headers=encoded)

    assert answer.status_code == 401
    assert await topic_records(settings) == []


@pytest.mark.parametrize("form", ["raw", "js-stringify"])
async def test_signed_test_message_is_accepted_as_a_test(
    edge: Edge, settings: Settings, form: str
) -> None:
    signed_text = TEST_MESSAGE if form == "raw" else json.dumps(TEST_MESSAGE.decode()).encode()
    answer = await post(edge, TEST_MESSAGE, {"X-TrendMicro-Signature": sign(signed_text, TOKEN)})

    [record] = await topic_records(settings)
    headers = {name: value.decode() for name, value in record.headers}
    assert answer.status_code == 202
    assert (headers["kind"], headers["signature-form"]) == ("test", form)
    assert record.value == TEST_MESSAGE
    assert record.key is None


async def test_signed_body_that_is_not_json_is_still_written(
    edge: Edge, settings: Settings
) -> None:
    body = b"\x00\xffnot json at all"
    answer = await post(edge, body, signed(body))

    [record] = await topic_records(settings)
    assert answer.status_code == 202
    assert record.value == body


@pytest.mark.parametrize("rotation", ["old-first", "new-first"])
async def test_every_configured_token_is_accepted(
    make_settings: SettingsFactory, rotation: str
) -> None:
    tokens = ["b2xkLXRva2Vu", TOKEN] if rotation == "old-first" else [TOKEN, "b2xkLXRva2Vu"]
    settings = make_settings(conformity_webhook_tokens=",".join(tokens))
    edge = await start_edge(settings)
    try:
        body = b'{"accountId":"a"}'
        answers = [await post(edge, body, signed(body, token)) for token in tokens]
    finally:
        await edge.stop()
    assert [a.status_code for a in answers] == [202, 202]


class TestRequiredHeaders:
    @pytest.fixture
    async def guarded(self, make_settings: SettingsFactory) -> AsyncIterator[Edge]:
        settings = make_settings(conformity_required_headers={"X-Channel": "s3cret"})
        running = await start_edge(settings)
        yield running
        await running.stop()

    async def test_request_without_it_is_401(self, guarded: Edge) -> None:
        body = b'{"accountId":"a"}'
        answer = await post(guarded, body, signed(body))
        assert (answer.status_code, answer.json()["error"]) == (401, "missing-required-header")

    async def test_wrong_value_is_401(self, guarded: Edge) -> None:
        body = b'{"accountId":"a"}'
        answer = await post(guarded, body, signed(body) | {"X-Channel": "guess"})
        assert answer.status_code == 401
        assert "guess" not in answer.text and "s3cret" not in answer.text

    async def test_request_with_it_is_accepted(self, guarded: Edge) -> None:
        body = b'{"accountId":"a"}'
        answer = await post(guarded, body, signed(body) | {"x-channel": "s3cret"})
        assert answer.status_code == 202


class TestBodyLimit:
    @pytest.fixture
    async def small(self, make_settings: SettingsFactory) -> AsyncIterator[tuple[Edge, Settings]]:
        settings = make_settings(ingest_max_body_bytes=100)
        running = await start_edge(settings)
        yield running, settings
        await running.stop()

    async def test_declared_length_over_the_limit_is_413(
        self, small: tuple[Edge, Settings]
    ) -> None:
        edge, settings = small
        body = b"x" * 101
        answer = await post(edge, body, signed(body))
        assert (answer.status_code, answer.json()["error"]) == (413, "too-large")
        assert await topic_records(settings) == []

    async def test_streamed_body_over_the_limit_is_413(self, small: tuple[Edge, Settings]) -> None:
        edge, _ = small

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(1000):
                yield b"x" * 50

        async with httpx.AsyncClient() as client:
            answer = await client.post(url(edge), content=chunks())
        assert answer.status_code == 413

    async def test_body_at_the_limit_is_accepted(self, small: tuple[Edge, Settings]) -> None:
        edge, _ = small
        body = b'{"accountId":"' + b"a" * 84 + b'"}'
        assert len(body) == 100
        answer = await post(edge, body, signed(body))
        assert answer.status_code == 202


async def test_health_and_readiness(edge: Edge) -> None:
    async with httpx.AsyncClient() as client:
        health = await client.get(url(edge, "/healthz"))
        ready = await client.get(url(edge, "/readyz"))
    assert (health.status_code, ready.status_code) == (200, 200)


async def test_broker_down_is_503_with_retry_after(
    make_settings: SettingsFactory,
) -> None:
    own_broker = start_broker()
    settings = make_settings(
        kafka_bootstrap_servers=own_broker.bootstrap_servers,
        kafka_publish_timeout_seconds=2.0,
        ingest_retry_after_seconds=7,
    )
    edge = await start_edge(settings)
    try:
        own_broker.stop()
        body = (fixtures_dir() / "failure-s3-public-read.json").read_bytes()
        answer = await post(edge, body, signed(body))
        async with httpx.AsyncClient() as client:
            ready = await client.get(url(edge, "/readyz"))
    finally:
        await edge.stop()

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "7"
    assert answer.json()["error"] == "broker-unavailable"
    assert ready.status_code == 503


class TestStartupRefusals:
    def test_no_token_and_no_opt_in_stops_start_up(self, make_settings: SettingsFactory) -> None:
        settings = make_settings(conformity_webhook_tokens="")
        with pytest.raises(ConfigError, match="CONFORMITY_WEBHOOK_TOKENS"):
            build_edge(settings)

    def test_opt_in_allows_unsigned(self, make_settings: SettingsFactory) -> None:
        settings = make_settings(conformity_webhook_tokens="", conformity_allow_unsigned=True)
        assert build_edge(settings) is not None

    @pytest.mark.parametrize("token", ["has space", "dash-ed", "under_score", "ünï"])
    def test_token_outside_base64_stops_start_up(self, token: str) -> None:
        with pytest.raises(ConfigError) as raised:
            load_settings(conformity_webhook_tokens=f"{TOKEN},{token}")
        message = str(raised.value)
        assert message.startswith("CONFORMITY_WEBHOOK_TOKENS: token number 2")
        assert token not in message


def _sample(text: str, name: str) -> float:
    """The value of the sample `name` (with its labels) in a Prometheus text page."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


async def test_metrics_count_outcomes_and_forms(edge: Edge) -> None:
    accepted = 'conformity_ingest_requests_total{outcome="accepted",reason="ok"}'
    refused = 'conformity_ingest_requests_total{outcome="refused",reason="bad-signature"}'
    raw_form = 'conformity_ingest_signature_form_total{form="raw"}'
    async with httpx.AsyncClient() as client:
        before = (await client.get(url(edge, "/metrics"))).text
        body = b'{"accountId":"m"}'
        await post(edge, body, signed(body))
        await post(edge, body, {"X-TrendMicro-Signature": "0" * 64})
        after = (await client.get(url(edge, "/metrics"))).text

    deltas = [
        _sample(after, name) - _sample(before, name) for name in (accepted, refused, raw_form)
    ]
    assert deltas == [1.0, 1.0, 1.0]
    assert "X-TrendMicro-Signature" not in after and TOKEN not in after
