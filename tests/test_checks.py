"""Tests for consumers.checks: reading one Conformity check into a Check."""

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from consumers.checks import Check, event_time, parse_check, read_check
from consumers.delivery import UnreadableRecord
from tests.builders import delivery
from tests.fixtures import fixtures_dir

RECEIVED = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CHECK_FILES = sorted(
    path for path in fixtures_dir().glob("*.json") if path.name.startswith(("failure", "success"))
)


def valid(**changes: Any) -> dict[str, Any]:
    """A complete, valid check; each test changes one thing."""
    document: dict[str, Any] = {
        "id": "ccc:acct-1:S3-001:S3:us-east-1:bucket-a",
        "accountId": "acct-1",
        "organisationId": "org-1",
        "ruleId": "S3-001",
        "ruleTitle": "S3 Bucket Public 'READ' Access",
        "service": "S3",
        "region": "us-east-1",
        "resource": "bucket-a",
        "message": "Bucket bucket-a allows public 'READ' access",
        "riskLevel": "VERY_HIGH",
        "status": "FAILURE",
        "categories": ["security"],
        "compliances": ["PCI", "HIPAA"],
        "tags": ["env::prod"],
        "notScored": False,
        "lastStatusUpdateDate": 1718445600000,
    }
    for name, value in changes.items():
        if value is _DROP:
            document.pop(name)
        else:
            document[name] = value
    return document


_DROP = object()


def parse(document: Any) -> Check:
    return parse_check(document, received_at=RECEIVED, body_sha256="0" * 64)


@pytest.mark.parametrize("path", CHECK_FILES, ids=[path.stem for path in CHECK_FILES])
def test_every_sample_check_is_read(path: Path) -> None:
    document = json.loads(path.read_bytes())

    check = parse(document)

    assert check.check_id == document["id"]
    assert check.account_id == document["accountId"]
    assert check.event_at == datetime.fromtimestamp(
        document["lastStatusUpdateDate"] / 1000, tz=UTC
    )
    assert check.document == document


def test_a_resource_holding_colons_and_slashes_is_kept_whole() -> None:
    document = json.loads((fixtures_dir() / "failure-iam-arn-resource.json").read_bytes())

    check = parse(document)

    assert check.resource == "arn:aws:iam::210987654321:role/service-role/etl-runner"
    assert (check.service, check.region) == ("IAM", "global")


def test_a_missing_resource_is_taken_from_the_id_and_may_be_empty() -> None:
    document = json.loads((fixtures_dir() / "failure-rtm-no-resource.json").read_bytes())

    check = parse(document)

    assert check.resource == ""
    assert (check.service, check.region) == ("RTM", "us-east-1")


def test_service_and_region_come_from_the_id_when_the_fields_are_missing() -> None:
    check = parse(valid(service=_DROP, region=None))

    assert (check.service, check.region, check.resource) == ("S3", "us-east-1", "bucket-a")


@pytest.mark.parametrize(
    "spelling", ["resolutionPageURL", "resolutionPageUrl"], ids=["older", "newer"]
)
def test_both_spellings_of_the_resolution_page_are_read(spelling: str) -> None:
    check = parse(valid(**{spelling: "https://example.test/s3-001"}))

    assert check.resolution_page_url == "https://example.test/s3-001"


def test_unknown_fields_are_kept_in_the_document() -> None:
    check = parse(valid(extradata=[{"name": "GroupName", "value": "bastion-sg"}], cost=0))

    assert check.document["extradata"] == [{"name": "GroupName", "value": "bastion-sg"}]
    assert check.document["cost"] == 0


def test_optional_fields_may_be_missing_or_null() -> None:
    optional = ("organisationId", "ruleTitle", "message", "categories", "compliances", "tags")
    document = valid(**dict.fromkeys(optional, _DROP), notScored=None)

    check = parse(document)

    assert check.organisation_id is None and check.rule_title is None and check.message is None
    assert check.categories == check.compliances == check.tags == ()
    assert check.not_scored is False and check.suppressed is False


def test_repeated_list_values_are_kept_once_in_order() -> None:
    check = parse(valid(compliances=["PCI", "NIST4", "PCI"]))

    assert check.compliances == ("PCI", "NIST4")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, datetime(2024, 6, 15, 10, tzinfo=UTC), id="last-status-update"),
        pytest.param(
            {"lastStatusUpdateDate": None, "lastModifiedDate": 1718449200000},
            datetime(2024, 6, 15, 11, tzinfo=UTC),
            id="last-modified",
        ),
        pytest.param(
            {"lastStatusUpdateDate": _DROP, "createdDate": 1718452800000},
            datetime(2024, 6, 15, 12, tzinfo=UTC),
            id="created",
        ),
        pytest.param(
            {"lastStatusUpdateDate": _DROP, "lastModifiedDate": 1718449200.0e3},
            datetime(2024, 6, 15, 11, tzinfo=UTC),
            id="integral-float",
        ),
        pytest.param({"lastStatusUpdateDate": _DROP}, RECEIVED, id="received"),
    ],
)
def test_event_time_follows_the_chain_of_fields(
    changes: dict[str, Any], expected: datetime
) -> None:
    assert parse(valid(**changes)).event_at == expected


def test_the_received_time_is_converted_to_utc() -> None:
    received = datetime(2024, 7, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))

    assert event_time({}, received) == datetime(2024, 7, 2, 4, 30, tzinfo=UTC)
    assert event_time({}, received).tzinfo is UTC


@pytest.mark.parametrize("name", ["id", "accountId", "ruleId", "status", "riskLevel"])
@pytest.mark.parametrize("value", [_DROP, None, ""], ids=["missing", "null", "empty"])
def test_a_check_without_a_required_field_is_unreadable(name: str, value: object) -> None:
    with pytest.raises(UnreadableRecord) as caught:
        parse(valid(**{name: value}))

    assert caught.value.reason == "check-missing-field"
    assert f"`{name}`" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"status": "PASSED"}, "status", id="status-outside-list"),
        pytest.param({"status": "failure"}, "status", id="status-lowercase"),
        pytest.param({"riskLevel": "SEVERE"}, "riskLevel", id="risk-outside-list"),
        pytest.param({"riskLevel": 3}, "riskLevel", id="risk-not-text"),
        pytest.param({"accountId": 42}, "accountId", id="account-not-text"),
        pytest.param({"id": "ccc:other:S3-001:S3:us-east-1:x"}, "id", id="id-other-account"),
        pytest.param({"id": "ccc:acct-1:S3-002:S3:us-east-1:x"}, "id", id="id-other-rule"),
        pytest.param({"id": "ccc:acct-1:S3-001:S3"}, "id", id="id-too-short"),
        pytest.param({"categories": "security"}, "categories", id="categories-not-list"),
        pytest.param({"tags": ["env::prod", 7]}, "tags", id="tag-not-text"),
        pytest.param({"notScored": "no"}, "notScored", id="not-scored-not-bool"),
        pytest.param({"suppressed": 1}, "suppressed", id="suppressed-not-bool"),
        pytest.param({"message": ["a"]}, "message", id="message-not-text"),
        pytest.param(
            {"lastStatusUpdateDate": "2024-06-15"}, "lastStatusUpdateDate", id="date-text"
        ),
        pytest.param({"lastStatusUpdateDate": 1.5}, "lastStatusUpdateDate", id="date-fraction"),
        pytest.param({"lastStatusUpdateDate": True}, "lastStatusUpdateDate", id="date-bool"),
        pytest.param({"lastStatusUpdateDate": 0}, "lastStatusUpdateDate", id="date-before-2000"),
        pytest.param(
            {"lastStatusUpdateDate": 1735819200001}, "lastStatusUpdateDate", id="date-in-future"
        ),
        pytest.param(
            {"createdDate": 10**20, "lastStatusUpdateDate": _DROP},
            "createdDate",
            id="date-out-of-range",
        ),
    ],
)
def test_a_check_with_a_bad_value_is_unreadable(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(UnreadableRecord) as caught:
        parse(valid(**changes))

    assert caught.value.reason == "check-bad-field"
    assert f"`{field}`" in str(caught.value)


@pytest.mark.parametrize("document", [[1], "text", 3, None], ids=["list", "string", "int", "null"])
def test_a_body_that_is_not_an_object_is_unreadable(document: Any) -> None:
    with pytest.raises(UnreadableRecord) as caught:
        parse(document)

    assert caught.value.reason == "check-bad-field"


def test_a_date_up_to_a_day_after_receipt_is_accepted() -> None:
    check = parse(valid(lastStatusUpdateDate=1735819200000))

    assert check.event_at == RECEIVED + timedelta(days=1)


def test_read_check_takes_the_hash_and_receive_time_of_the_delivery() -> None:
    record = delivery(valid(lastStatusUpdateDate=_DROP), received_at=RECEIVED)

    check = read_check(record)

    assert check.body_sha256 == record.body_sha256
    assert check.event_at == RECEIVED


def test_read_check_escapes_characters_postgres_cannot_store() -> None:
    record = delivery(json.dumps(valid(message="nul\u0000here")).encode())

    check = read_check(record)

    assert check.message == "nul\\u0000here"


def test_a_body_that_is_not_json_is_unreadable() -> None:
    with pytest.raises(UnreadableRecord) as caught:
        read_check(delivery(b"{not json"))

    assert caught.value.reason == "body-not-json"


@pytest.mark.parametrize(
    ("flags", "counted"),
    [
        pytest.param({}, True, id="scored"),
        pytest.param({"notScored": True}, False, id="not-scored"),
        pytest.param({"suppressed": True}, False, id="suppressed"),
    ],
)
def test_counted_leaves_out_not_scored_and_suppressed_checks(
    flags: dict[str, Any], counted: bool
) -> None:
    assert parse(valid(**flags)).counted is counted


def test_precedence_orders_by_time_then_failure_then_body() -> None:
    base = parse(valid(status="SUCCESS"))
    failing = parse(valid(status="FAILURE"))
    later = parse(valid(lastStatusUpdateDate=1718445600001, status="SUCCESS"))

    assert base.precedence < failing.precedence < later.precedence
