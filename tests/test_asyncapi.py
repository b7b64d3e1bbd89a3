"""`conformity-pipeline asyncapi`: the AsyncAPI document FastStream generates for the topics."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from conformity_pipeline.cli import app
from consumers.registry import REACTIONS

ENVIRONMENT = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092",
    "KAFKA_CHECKS_TOPIC": "checks-doc",
    "KAFKA_DEAD_LETTER_TOPIC": "checks-doc.dlq",
    "KAFKA_CONSUMER_GROUP_PREFIX": "doc",
}


def test_the_document_names_the_topics_the_edge_and_every_consumer_group() -> None:
    result = CliRunner().invoke(app, ["asyncapi"], env=ENVIRONMENT)

    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.output)
    assert document["asyncapi"] == "3.0.0"
    channels = document["channels"]
    assert channels["edge"]["address"] == "checks-doc"
    assert channels["dead-letters"]["address"] == "checks-doc.dlq"
    for name in REACTIONS:
        assert channels[name]["address"] == "checks-doc"
        assert f"`doc.{name}`" in channels[name]["description"]
        assert document["operations"][name]["action"] == "receive"
    assert "event-id" in channels["edge"]["description"]
    hosts = {server["host"] for server in document["servers"].values()}
    assert hosts == {"kafka-1:9092", "kafka-2:9092"}


def test_the_payload_schema_is_the_conformity_check() -> None:
    result = CliRunner().invoke(app, ["asyncapi", "--format", "json"], env=ENVIRONMENT)

    schema = json.loads(result.output)["components"]["schemas"]["ConformityCheck"]
    assert {"id", "accountId", "ruleId", "riskLevel", "status"} <= set(schema["required"])
    assert schema["properties"]["riskLevel"]["enum"][-1] == "EXTREME"
    assert schema["additionalProperties"] is True


def test_the_document_can_be_written_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "asyncapi.yaml"
    result = CliRunner().invoke(app, ["asyncapi", "--output", str(target)], env=ENVIRONMENT)
    assert result.exit_code == 0 and result.output == ""
    assert yaml.safe_load(target.read_text())["info"]["title"] == "Conformity pipeline"
