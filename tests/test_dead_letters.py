"""`conformity-pipeline dead-letters`: listing and replaying, on a real broker and Postgres."""

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from conformity_pipeline import dead_letters as dlq
from conformity_pipeline.cli import app
from conformity_pipeline.errors import DependencyError
from conformity_pipeline.local import free_port
from conformity_pipeline.services import build_consumers
from conformity_pipeline.settings import Settings
from conformity_pipeline.topics import Header, ensure_topics
from tests.conftest import SettingsFactory
from tests.fixtures import fixtures_dir
from tests.kafka_helpers import eventually, produce, read_topic

Headers = list[tuple[str, bytes]]
BODY = (fixtures_dir() / "failure-s3-public-read.json").read_bytes()


def edge_headers(body: bytes, event_id: str | None = None) -> Headers:
    """Headers as the edge writes them."""
    return [
        (Header.EVENT_ID.value, (event_id or str(uuid.uuid4())).encode()),
        (Header.RECEIVED_AT.value, datetime(2026, 12, 4, 9, 30, tzinfo=UTC).isoformat().encode()),
        (Header.SIGNATURE_FORM.value, b"raw"),
        (Header.BODY_SHA256.value, hashlib.sha256(body).hexdigest().encode()),
        (Header.KIND.value, b"check"),
    ]


def dead_letter_headers(consumer: str, reason: str) -> Headers:
    """Headers the runtime adds when it dead-letters a record."""
    return [
        (Header.DEAD_LETTER_REASON.value, reason.encode()),
        (Header.DEAD_LETTER_CONSUMER.value, consumer.encode()),
        (Header.ORIGINAL_TOPIC.value, b"conformity.checks"),
        (Header.ORIGINAL_PARTITION.value, b"2"),
        (Header.ORIGINAL_OFFSET.value, b"41"),
    ]


def environment(settings: Settings) -> dict[str, str]:
    """The variables that make the command use this test's broker and topics."""
    names = (
        "kafka_bootstrap_servers",
        "kafka_checks_topic",
        "kafka_dead_letter_topic",
        "kafka_publish_timeout_seconds",
    )
    return {name.upper(): str(getattr(settings, name)) for name in names}


def write(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes, Headers]]
) -> None:
    assert settings.kafka_bootstrap_servers is not None
    asyncio.run(produce(settings.kafka_bootstrap_servers, topic, records))


def topic_records(settings: Settings) -> list[Any]:
    assert settings.kafka_bootstrap_servers is not None
    return asyncio.run(read_topic(settings.kafka_bootstrap_servers, settings.kafka_checks_topic))


def run(settings: Settings, *arguments: str) -> Any:
    return CliRunner().invoke(app, ["dead-letters", *arguments], env=environment(settings))


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    made = make_settings()
    ensure_topics(made)
    return made


async def test_a_rejected_record_is_listed_with_its_reason_consumer_and_origin(
    settings: Settings,
) -> None:
    assert settings.kafka_bootstrap_servers is not None
    event_id = str(uuid.uuid4())
    record = (b"acct", b"not json", edge_headers(b"not json", event_id))
    await produce(settings.kafka_bootstrap_servers, settings.kafka_checks_topic, [record])
    consumers = build_consumers(settings, ["archive"])
    await consumers.start()
    try:
        await eventually(lambda: dlq.count_dead_letters(settings) == 1)
    finally:
        await consumers.stop()

    (letter,) = await asyncio.to_thread(dlq.read_dead_letters, settings)
    result = await asyncio.to_thread(run, settings)

    assert letter.event_id == event_id and letter.key == b"acct" and letter.body == b"not json"
    assert letter.header(Header.DEAD_LETTER_CONSUMER) == "archive"
    assert letter.origin.startswith(f"{settings.kafka_checks_topic}[")
    assert result.exit_code == 0, result.output
    assert f"event {event_id} consumer archive" in result.output
    assert "reason: The body is not JSON" in result.output
    assert result.output.rstrip().endswith("1 dead letter(s).")


def test_listing_consumes_nothing_and_filters_by_event_and_consumer(settings: Settings) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    write(
        settings,
        settings.kafka_dead_letter_topic,
        [
            (b"a", BODY, edge_headers(BODY, first) + dead_letter_headers("archive", "one")),
            (b"b", BODY, edge_headers(BODY, second) + dead_letter_headers("checks", "two")),
        ],
    )

    everything = dlq.read_dead_letters(settings)

    assert [letter.event_id for letter in dlq.read_dead_letters(settings)] == [
        letter.event_id for letter in everything
    ]
    assert {letter.event_id for letter in everything} == {first, second}
    assert [letter.event_id for letter in dlq.select(everything, [second])] == [second]
    assert [letter.event_id for letter in dlq.select(everything, consumer="archive")] == [first]
    assert "1 dead letter(s)." in run(settings, "--consumer", "checks").output


def test_a_replay_sends_the_record_back_with_the_edge_headers_only(settings: Settings) -> None:
    event_id = str(uuid.uuid4())
    original = edge_headers(BODY, event_id)
    write(
        settings,
        settings.kafka_dead_letter_topic,
        [(b"Hk4Lp9sWd", BODY, original + dead_letter_headers("checks", "Postgres refused"))],
    )

    result = run(settings, "--replay", "--event-id", event_id)

    assert result.exit_code == 0, result.output
    assert f"replayed event {event_id}" in result.output
    (record,) = topic_records(settings)
    assert (record.key, record.value) == (b"Hk4Lp9sWd", BODY)
    assert [(name, value) for name, value in record.headers] == [
        (str(name), value) for name, value in original
    ]
    assert len(dlq.read_dead_letters(settings)) == 1, "the dead letter itself stays"


def test_replay_needs_an_explicit_choice(settings: Settings) -> None:
    result = run(settings, "--replay")
    assert result.exit_code == 2
    assert "--event-id ID (repeatable) or --all" in result.output


def test_replay_all_sends_each_event_once_and_skips_records_the_edge_never_wrote(
    settings: Settings,
) -> None:
    twice = str(uuid.uuid4())
    write(
        settings,
        settings.kafka_dead_letter_topic,
        [
            (b"a", BODY, edge_headers(BODY, twice) + dead_letter_headers("archive", "x")),
            (b"a", BODY, edge_headers(BODY, twice) + dead_letter_headers("checks", "x")),
            (b"b", b"?", [("foreign", b"1"), *dead_letter_headers("archive", "no headers")]),
        ],
    )

    result = run(settings, "--replay", "--all")

    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("1 replayed, 2 skipped.")
    assert "replayed once already in this run" in result.output
    assert "lacks the edge's event-id header" in result.output
    assert len(topic_records(settings)) == 1


async def test_replaying_twice_stores_the_record_once(settings: Settings) -> None:
    event_id = str(uuid.uuid4())
    letter = (
        b"Hk4Lp9sWd",
        BODY,
        edge_headers(BODY, event_id) + dead_letter_headers("archive", "x"),
    )
    assert settings.kafka_bootstrap_servers is not None
    await produce(settings.kafka_bootstrap_servers, settings.kafka_dead_letter_topic, [letter])
    consumers = build_consumers(settings, ["archive"])
    await consumers.start()
    try:
        for _ in range(2):
            letters = await asyncio.to_thread(dlq.read_dead_letters, settings)
            report = await asyncio.to_thread(dlq.replay, settings, letters)
            assert len(report.replayed) == 1
        assert await consumers.drain(30)
    finally:
        await consumers.stop()

    engine = create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            deliveries = connection.execute(text("SELECT count(*) FROM webhook_deliveries"))
            events = connection.execute(
                text("SELECT event_id, delivery_count FROM webhook_events")
            )
            assert deliveries.scalar() == 1
            assert [(str(row[0]), row[1]) for row in events] == [(event_id, 1)]
    finally:
        engine.dispose()
    assert len(await asyncio.to_thread(topic_records, settings)) == 2


def test_a_missing_dead_letter_topic_lists_nothing(make_settings: SettingsFactory) -> None:
    settings = make_settings(kafka_dead_letter_topic=f"absent-{uuid.uuid4().hex[:8]}")
    assert dlq.read_dead_letters(settings) == []
    assert dlq.count_dead_letters(settings) == 0


def test_an_unreachable_broker_is_a_dependency_error_naming_the_variable(
    make_settings: SettingsFactory,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = make_settings(kafka_bootstrap_servers=address, kafka_publish_timeout_seconds=1)

    with pytest.raises(DependencyError, match=f"KAFKA_BOOTSTRAP_SERVERS={address}"):
        dlq.read_dead_letters(settings)
    result = run(settings)
    assert result.exit_code == 2 and "error: Could not reach" in result.output
