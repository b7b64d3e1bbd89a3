"""`conformity-pipeline doctor` against a real broker and real Postgres databases."""

import asyncio
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition
from typer.testing import CliRunner

from conformity_pipeline.cli import app
from conformity_pipeline.doctor import (
    Finding,
    Verdict,
    check_database,
    check_public_url,
    check_tokens,
    diagnose,
)
from conformity_pipeline.local import free_port
from conformity_pipeline.settings import Settings, load_settings
from conformity_pipeline.topics import ensure_topics
from tests.conftest import TOKEN, SettingsFactory
from tests.kafka_helpers import produce

GOOD_URL = "https://conformity.example.com/webhooks/conformity"


def verdicts(findings: list[Finding]) -> dict[str, Verdict]:
    return {finding.check: finding.verdict for finding in findings}


def detail(findings: list[Finding], check: str) -> str:
    (found,) = [finding for finding in findings if finding.check == check]
    return found.detail


@pytest.mark.parametrize(
    ("url", "verdict", "words"),
    [
        (GOOD_URL, Verdict.OK, "accepts"),
        ("http://conformity.example.com/webhooks/conformity", Verdict.FAIL, "https://"),
        ("https://203.0.113.7/webhooks/conformity", Verdict.FAIL, "IP address"),
        ("https://[2001:db8::1]/webhooks/conformity", Verdict.FAIL, "IP address"),
        ("https://localhost/webhooks/conformity", Verdict.FAIL, "localhost"),
        ("https://edge.localhost/webhooks/conformity", Verdict.FAIL, "localhost"),
        ("https:///webhooks/conformity", Verdict.FAIL, "no host name"),
        ("https://conformity.example.com/", Verdict.WARN, "path"),
        ("https://edge/webhooks/conformity", Verdict.WARN, "no dot"),
        (None, Verdict.WARN, "PUBLIC_URL is not set"),
    ],
    ids=[
        "https-name",
        "plain-http",
        "ipv4",
        "ipv6",
        "localhost",
        "localhost-subdomain",
        "no-host",
        "other-path",
        "single-label",
        "unset",
    ],
)
def test_public_url_follows_conformitys_rules(
    url: str | None, verdict: Verdict, words: str
) -> None:
    finding = check_public_url(url)
    assert (finding.verdict, words in finding.detail) == (verdict, True), finding.detail


@pytest.mark.parametrize(
    ("overrides", "verdict"),
    [
        ({"conformity_webhook_tokens": TOKEN}, Verdict.OK),
        ({"conformity_allow_unsigned": True}, Verdict.WARN),
        ({}, Verdict.FAIL),
    ],
    ids=["token", "unsigned-allowed", "nothing"],
)
def test_tokens_are_required_unless_unsigned_is_allowed(
    overrides: dict[str, Any], verdict: Verdict
) -> None:
    settings = load_settings(**({"conformity_webhook_tokens": ""} | overrides))
    assert check_tokens(settings).verdict is verdict


def test_a_token_outside_the_base64_alphabet_fails_the_settings_and_says_so() -> None:
    findings = diagnose(lambda: load_settings(conformity_webhook_tokens="abc-def_ghi"))
    assert verdicts(findings) == {"settings": Verdict.FAIL}
    assert "base64" in detail(findings, "settings")


def test_the_command_exits_1_and_names_the_bad_variable() -> None:
    result = CliRunner().invoke(app, ["doctor"], env={"CONFORMITY_WEBHOOK_TOKENS": "not a token"})
    assert result.exit_code == 1
    assert "fail settings: CONFORMITY_WEBHOOK_TOKENS" in result.output


def test_a_healthy_stack_has_no_failure(make_settings: SettingsFactory) -> None:
    settings = make_settings(public_url=GOOD_URL)
    ensure_topics(settings)

    findings = diagnose(lambda: settings)

    assert Verdict.FAIL not in verdicts(findings).values(), findings
    for check in ("settings", "webhook tokens", "public url", "broker", "topics", "database"):
        assert verdicts(findings)[check] is Verdict.OK
    assert verdicts(findings)["schema"] is Verdict.OK
    assert verdicts(findings)["dead letters"] is Verdict.OK


def test_missing_topics_are_a_warning_that_says_who_creates_them(
    make_settings: SettingsFactory,
) -> None:
    findings = diagnose(lambda: make_settings())
    assert verdicts(findings)["topics"] is Verdict.WARN
    assert "create them" in detail(findings, "topics")


def commit(settings: Settings, group: str, offset: int) -> None:
    assert settings.kafka_bootstrap_servers is not None
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
    )
    try:
        topic = settings.kafka_checks_topic
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.commit(
            {TopicPartition(topic, p): OffsetAndMetadata(offset, "", -1) for p in partitions}
        )
    finally:
        consumer.close()


def test_lag_and_dead_letters_are_reported_with_what_to_do(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(public_url=GOOD_URL)
    ensure_topics(settings)
    assert settings.kafka_bootstrap_servers is not None
    record = (b"acct", b"{}", [("event-id", b"x")])
    asyncio.run(
        produce(settings.kafka_bootstrap_servers, settings.kafka_checks_topic, [record] * 3)
    )
    asyncio.run(
        produce(settings.kafka_bootstrap_servers, settings.kafka_dead_letter_topic, [record])
    )
    commit(settings, f"{settings.kafka_consumer_group_prefix}.archive", 0)

    findings = diagnose(lambda: settings, max_lag=1)

    assert verdicts(findings)["lag archive"] is Verdict.WARN
    assert detail(findings, "lag archive").startswith("3 records behind")
    assert detail(findings, "lag checks").endswith(
        "has not joined and 3 records wait for it; start `conformity-pipeline consume checks`."
    )
    assert verdicts(findings)["dead letters"] is Verdict.WARN
    assert "conformity-pipeline dead-letters" in detail(findings, "dead letters")
    assert Verdict.FAIL not in verdicts(findings).values()


def test_an_unreachable_broker_fails_with_the_address(make_settings: SettingsFactory) -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = make_settings(kafka_bootstrap_servers=address, kafka_publish_timeout_seconds=1)

    findings = diagnose(lambda: settings)

    assert verdicts(findings)["broker"] is Verdict.FAIL
    assert address in detail(findings, "broker")
    assert verdicts(findings)["database"] is Verdict.OK, "the other checks still run"


def test_a_database_below_head_fails_and_says_to_migrate(
    make_settings: SettingsFactory, empty_database_url: str
) -> None:
    findings = check_database(make_settings(database_url=empty_database_url))
    assert verdicts(findings) == {"database": Verdict.OK, "schema": Verdict.FAIL}
    assert "conformity-pipeline migrate" in detail(findings, "schema")


def test_an_unreachable_database_fails_without_showing_the_password(
    make_settings: SettingsFactory,
) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/postgres"
    findings = check_database(make_settings(database_url=url))
    assert verdicts(findings) == {"database": Verdict.FAIL}
    assert "hunter2" not in detail(findings, "database")
