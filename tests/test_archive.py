"""The archive consumer against a real broker and a real Postgres, fed through the real edge."""

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from conformity_pipeline.errors import DependencyError, SchemaNotAtHead
from conformity_pipeline.lag import group_lag
from conformity_pipeline.services import build_consumers
from conformity_pipeline.settings import Settings
from conformity_pipeline.topics import ensure_topics
from consumers.archive import storable
from tests.builders import RunningPipeline, delivery
from tests.conftest import SettingsFactory
from tests.fixtures import fixtures_dir
from tests.kafka_helpers import eventually, produce, read_topic

FIXTURES = sorted(fixtures_dir().glob("*.json"))
CHECK_FIXTURES = [path for path in FIXTURES if "signatures" not in path.name]


class Pipeline(RunningPipeline):
    """The edge and the archive consumer, with a way to read what they stored."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, ["archive"])
        self.engine = create_engine(settings.sqlalchemy_url)

    async def stop(self) -> None:
        await super().stop()
        self.engine.dispose()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(text(sql), params))

    def count(self) -> int:
        return int(self.rows("SELECT count(*) FROM webhook_events")[0][0])


@pytest.fixture
async def pipeline(make_settings: SettingsFactory) -> AsyncIterator[Pipeline]:
    running = Pipeline(make_settings())
    await running.start()
    yield running
    await running.stop()


async def test_every_fixture_lands_once_with_its_document_intact(pipeline: Pipeline) -> None:
    answers = [await pipeline.post(path.read_bytes()) for path in FIXTURES]
    await pipeline.post((fixtures_dir() / "test-message.txt").read_bytes())

    await eventually(lambda: pipeline.count() == len(FIXTURES) + 1)
    assert [a.status_code for a in answers] == [202] * len(FIXTURES)
    for path, answer in zip(FIXTURES, answers, strict=True):
        [row] = pipeline.rows(
            "SELECT event_id, document, delivery_count, body_sha256, raw_body, kind"
            " FROM webhook_events WHERE body_sha256 = :sha",
            sha=hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        assert str(row.event_id) == answer.json()["event_id"]
        assert row.document == json.loads(path.read_bytes())
        assert (row.delivery_count, row.raw_body, row.kind) == (1, None, "check")


async def test_check_columns_are_filled(pipeline: Pipeline) -> None:
    body = (fixtures_dir() / "failure-iam-arn-resource.json").read_bytes()
    answer = await pipeline.post(body)

    await eventually(lambda: pipeline.count() == 1)
    [row] = pipeline.rows(
        'SELECT account_id, check_id, status, signature_form, topic, partition, "offset",'
        " received_at FROM webhook_events"
    )
    [record] = await read_topic(
        pipeline.settings.require_kafka(), pipeline.settings.kafka_checks_topic
    )
    assert answer.status_code == 202
    assert row.account_id == "6d1f0c2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
    assert row.check_id == (
        "ccc:6d1f0c2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f:IAM-038:IAM:global:"
        "arn:aws:iam::210987654321:role/service-role/etl-runner"
    )
    assert (row.status, row.signature_form) == ("FAILURE", "raw")
    assert (row.topic, row.partition, row.offset) == (
        record.topic,
        record.partition,
        record.offset,
    )
    assert row.received_at.tzinfo is not None


async def test_test_message_is_recorded_as_a_test(pipeline: Pipeline) -> None:
    await pipeline.post((fixtures_dir() / "test-message.txt").read_bytes())

    await eventually(lambda: pipeline.count() == 1)
    [row] = pipeline.rows("SELECT kind, document, account_id FROM webhook_events")
    assert (row.kind, row.document, row.account_id) == (
        "test",
        "Test Message from Cloud Conformity",
        None,
    )


async def test_same_delivery_twice_is_one_row_with_two_deliveries(pipeline: Pipeline) -> None:
    body = (fixtures_dir() / "failure-s3-public-read.json").read_bytes()
    first, second = await pipeline.post(body), await pipeline.post(body)

    await eventually(lambda: pipeline.rows("SELECT delivery_count FROM webhook_events") == [(2,)])
    [row] = pipeline.rows("SELECT event_id FROM webhook_events")
    delivered = {r.event_id for r in pipeline.rows("SELECT event_id FROM webhook_deliveries")}
    assert str(row.event_id) == first.json()["event_id"]
    assert {str(e) for e in delivered} == {first.json()["event_id"], second.json()["event_id"]}


async def test_kafka_redelivery_changes_nothing(pipeline: Pipeline) -> None:
    body = (fixtures_dir() / "failure-rtm-no-resource.json").read_bytes()
    await pipeline.post(body)
    await eventually(lambda: pipeline.count() == 1)
    topic = pipeline.settings.kafka_checks_topic
    [record] = await read_topic(pipeline.settings.require_kafka(), topic)

    # The same record again, as a consumer crash before its commit would redeliver it.
    await produce(
        pipeline.settings.require_kafka(),
        topic,
        [(record.key, record.value, list(record.headers))],
    )
    marker = (fixtures_dir() / "failure-azure-keyvault.json").read_bytes()
    await pipeline.post(marker)

    await eventually(lambda: pipeline.count() == 2)
    assert pipeline.rows("SELECT delivery_count FROM webhook_events ORDER BY received_at") == [
        (1,),
        (1,),
    ]
    assert pipeline.rows("SELECT count(*) FROM webhook_deliveries") == [(2,)]


async def test_unreadable_body_is_dead_lettered_and_the_partition_moves_on(
    pipeline: Pipeline,
) -> None:
    settings = pipeline.settings
    bad = await pipeline.post(b"this is not json")
    good = await pipeline.post(b'{"accountId":"acc-1","id":"ccc:acc-1:R:S:r:x"}')

    await eventually(lambda: pipeline.count() == 1)
    dead = await eventually(
        lambda: read_topic(settings.require_kafka(), settings.kafka_dead_letter_topic)
    )
    [letter] = dead
    headers = {name: value.decode() for name, value in letter.headers}
    assert (bad.status_code, good.status_code) == (202, 202)
    assert letter.value == b"this is not json"
    assert headers["dead-letter-consumer"] == "archive"
    assert headers["dead-letter-reason"].startswith("The body is not JSON")
    assert headers["event-id"] == bad.json()["event_id"]
    assert headers["original-topic"] == settings.kafka_checks_topic


async def test_nul_characters_are_stored_losslessly(pipeline: Pipeline) -> None:
    body = b'{"accountId":"acc-nul","message":"a\\u0000b","\\u0000key":["\\u0000"]}'
    await pipeline.post(body)

    await eventually(lambda: pipeline.count() == 1)
    [row] = pipeline.rows("SELECT document, raw_body FROM webhook_events")
    assert row.document == {
        "accountId": "acc-nul",
        "message": "a\\u0000b",
        "\\u0000key": ["\\u0000"],
    }
    assert bytes(row.raw_body) == body
    assert json.loads(bytes(row.raw_body))["message"] == "a\x00b"


async def test_consumer_refuses_a_schema_not_at_head(
    make_settings: SettingsFactory, empty_database_url: str
) -> None:
    consumers = build_consumers(make_settings(database_url=empty_database_url), ["archive"])
    with pytest.raises(SchemaNotAtHead, match="conformity-pipeline migrate"):
        await consumers.start()
    await consumers.stop()


async def test_consumer_names_the_database_it_cannot_reach(make_settings: SettingsFactory) -> None:
    settings = make_settings(database_url="postgresql://postgres:pw@127.0.0.1:1/none")
    consumers = build_consumers(settings, ["archive"])
    with pytest.raises(DependencyError) as raised:
        await consumers.start()
    await consumers.stop()
    assert str(raised.value).startswith(
        "Could not reach Postgres at "
        "DATABASE_URL=postgresql+psycopg://postgres:***@127.0.0.1:1/none;"
    )


def _pipeline_env(settings: Settings) -> dict[str, str]:
    return os.environ | {
        "DATABASE_URL": settings.sqlalchemy_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.require_kafka(),
        "KAFKA_CHECKS_TOPIC": settings.kafka_checks_topic,
        "KAFKA_DEAD_LETTER_TOPIC": settings.kafka_dead_letter_topic,
        "KAFKA_CONSUMER_GROUP_PREFIX": settings.kafka_consumer_group_prefix,
        "CONSUMER_MAX_RECORDS": "50",
        "METRICS_PORT": "0",
    }


def _spawn_consumer(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "conformity_pipeline", "consume", "archive"]
    with log.open("ab") as output:
        return subprocess.Popen(
            command, env=_pipeline_env(settings), stdout=output, stderr=subprocess.STDOUT
        )


async def test_consumer_killed_mid_stream_loses_and_duplicates_nothing(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    await asyncio.to_thread(ensure_topics, settings)
    now = datetime.now(UTC).isoformat().encode()
    records = []
    for number in range(3000):
        body = json.dumps({"accountId": f"acc-{number % 7}", "id": f"ccc:{number}"}).encode()
        headers = [
            ("event-id", str(uuid.uuid4()).encode()),
            ("received-at", now),
            ("body-sha256", hashlib.sha256(body).hexdigest().encode()),
            ("kind", b"check"),
        ]
        records.append((f"acc-{number % 7}".encode(), body, headers))
    await produce(settings.require_kafka(), settings.kafka_checks_topic, records)
    engine = create_engine(settings.sqlalchemy_url)

    def stored() -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(text("SELECT count(*) FROM webhook_events")).scalar_one()
            )

    group = f"{settings.kafka_consumer_group_prefix}.archive"
    assert group_lag(settings, group) == 3000
    log = tmp_path / "consumer.log"
    first = _spawn_consumer(settings, log)
    try:
        await eventually(lambda: stored() > 0, timeout=60, interval=0.05)
    except AssertionError:
        raise AssertionError(f"nothing stored; the consumer said:\n{log.read_text()}") from None
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = stored()

    second = _spawn_consumer(settings, log)
    try:
        await eventually(lambda: stored() == 3000, timeout=120)
    finally:
        second.terminate()
        second.wait(timeout=60)
    with engine.connect() as connection:
        totals = connection.execute(
            text(
                "SELECT count(*), sum(delivery_count), count(DISTINCT check_id)"
                " FROM webhook_events"
            )
        ).one()
    engine.dispose()
    assert 0 < killed_at < 3000
    assert tuple(totals) == (3000, 3000, 3000)
    assert group_lag(settings, group) == 0


def test_two_migrations_at_once_both_succeed(empty_database_url: str) -> None:
    env = os.environ | {"DATABASE_URL": empty_database_url}
    command = [sys.executable, "-m", "conformity_pipeline", "migrate"]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0].decode() for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    engine = create_engine(empty_database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    from conformity_pipeline.schema import head_revisions

    assert {v[0] for v in versions} == head_revisions()


@pytest.mark.parametrize(
    ("body", "document", "raw_kept"),
    [
        (b'{"a":"plain"}', {"a": "plain"}, False),
        (b'{"a":"x\\\\u0000"}', {"a": "x\\u0000"}, False),
        (b'{"a":"\\u0000"}', {"a": "\\u0000"}, True),
        (b'{"a":"\\ud83d"}', {"a": "\\ud83d"}, True),
        (b'{"a":"\\ud83d\\udd12"}', {"a": "\U0001f512"}, False),
    ],
    ids=["plain", "escaped-backslash", "nul", "lone-surrogate", "surrogate-pair"],
)
def test_storable_documents(body: bytes, document: dict[str, str], raw_kept: bool) -> None:
    stored = storable(delivery(body))
    assert json.loads(stored.json_text) == document
    assert stored.raw_body == (body if raw_kept else None)
