"""The compose stack, checked without a Docker engine: what it names must exist in the code.

Every service's environment uses settings the code reads, every `${VAR}` has a line in
`.env.example`, the proxy and Prometheus reach the ports the services listen on, and every SQL
query of the dashboards runs against the schema at head, empty and with checks stored.
"""

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from conformity_pipeline import metrics
from conformity_pipeline.doctor import public_url_advice, public_url_problems
from conformity_pipeline.settings import Settings
from consumers.registry import REACTIONS
from tests.builders import delivery
from tests.fixtures import fixtures_dir

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_IMAGE = "conformity-pipeline:local"
APP_SERVICES = sorted(name for name, spec in SERVICES.items() if spec.get("image") == APP_IMAGE)
OTHER_SERVICES = sorted(set(SERVICES) - set(APP_SERVICES))
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
# The alerts consumer's setting, until Settings declares it; then this set can go.
CONSUMER_NAMES = sorted(REACTIONS)
# Services that run one command and exit: `migrate` on every start, `tools` on demand.
ONE_SHOTS = {"migrate", "tools"}

# Variables each third-party image reads itself, or that its mounted config refers to.
IMAGE_VARIABLES: dict[str, Callable[[str], bool]] = {
    "kafka": lambda name: name.startswith("KAFKA_") or name == "CLUSTER_ID",
    "postgres": lambda name: name.startswith("POSTGRES_") or name in _mentioned("postgres"),
    "proxy": lambda name: name in _mentioned("proxy"),
    "grafana": lambda name: name.startswith("GF_") or name in _mentioned("grafana"),
    "prometheus": lambda name: False,
}
DASHBOARD_FILES = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
TIME_RANGE = ("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")


def _mentioned(service: str) -> str:
    """The text of every config file mounted into `service` (its variables must appear there)."""
    texts = []
    for volume in SERVICES[service].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./"):
            path = ROOT / source
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            texts += [file.read_text() for file in files if file.is_file()]
    return "\n".join(texts)


def environment(service: str) -> dict[str, str]:
    return {key: str(value) for key, value in (SERVICES[service].get("environment") or {}).items()}


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_the_stack_has_every_part_the_issue_asks_for() -> None:
    expected = {"kafka", "postgres", "migrate", "edge", "proxy", "prometheus", "grafana", "tools"}
    assert expected <= set(SERVICES)
    assert SERVICES["tools"]["profiles"] == ["tools"], "`up` must not start the tools"
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert any(v.endswith(":/var/lib/kafka/data") for v in SERVICES["kafka"]["volumes"])
    assert any("/var/lib/postgresql/data" in v for v in SERVICES["postgres"]["volumes"])
    assert "ports" not in SERVICES["edge"], "only the proxy is reachable from outside"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_our_services_set_only_variables_the_settings_read(service: str) -> None:
    unknown = set(environment(service)) - SETTING_NAMES
    assert not unknown, f"{service} sets {sorted(unknown)}, which Settings does not read"


@pytest.mark.parametrize("service", OTHER_SERVICES)
def test_other_services_set_only_variables_their_image_or_config_reads(service: str) -> None:
    unknown = {name for name in environment(service) if not IMAGE_VARIABLES[service](name)}
    assert not unknown, f"{service} sets {sorted(unknown)}, which nothing reads"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_our_service_environments_are_valid_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = env_example()
    for key, value in environment(service).items():
        monkeypatch.setenv(key, interpolate(value, example))

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.kafka_bootstrap_servers in (None, "kafka:9092")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`, with `x` for a secret."""

    def replace(match: re.Match[str]) -> str:
        default = match["arg"] if (match["op"] or "").endswith("-") else None
        return variables.get(match["name"]) or default or "x"

    pattern = r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, replace, value)


def test_every_interpolated_variable_has_a_line_in_env_example() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE_TEXT))
    assert used - set(env_example()) == set()


def test_secrets_are_required_from_the_env_file_not_defaulted() -> None:
    for name in ("POSTGRES_PASSWORD", "GRAFANA_DB_PASSWORD", "CONFORMITY_WEBHOOK_TOKENS"):
        assert f"${{{name}:?" in COMPOSE_TEXT and f"${{{name}:-" not in COMPOSE_TEXT
        assert env_example()[name] == "", f"{name} must not ship with a value"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_a_restart_policy_and_a_healthcheck(service: str) -> None:
    spec = SERVICES[service]
    if service in ONE_SHOTS:
        assert spec["restart"] == "no" and spec["healthcheck"] == {"disable": True}
        return
    assert spec["restart"] == "unless-stopped"
    assert spec["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


@pytest.mark.parametrize("service", APP_SERVICES)
def test_what_uses_the_database_waits_for_the_migration(service: str) -> None:
    if "DATABASE_URL" not in environment(service) or service in ONE_SHOTS:
        return
    assert SERVICES[service]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }


@pytest.mark.parametrize("name", CONSUMER_NAMES)
def test_each_consumer_is_its_own_service(name: str) -> None:
    spec = SERVICES[f"consumer-{name}"]
    assert spec["command"] == ["consume", name]
    assert "container_name" not in spec, "a fixed container name prevents scaling"


def test_every_consume_command_names_a_known_consumer() -> None:
    commands = [spec.get("command", []) for spec in SERVICES.values()]
    named = {command[1] for command in commands if command[:1] == ["consume"]}
    assert named <= set(CONSUMER_NAMES)


def test_the_public_url_of_the_example_passes_the_doctor() -> None:
    url = interpolate(environment("edge")["PUBLIC_URL"], env_example())
    assert public_url_problems(url) == [] and public_url_advice(url) == []


def test_the_proxy_forwards_the_webhook_to_the_edge_port_only() -> None:
    caddyfile = (DEPLOY / "caddy" / "Caddyfile").read_text()
    port = environment("edge")["INGEST_PORT"]
    assert "name edge" in caddyfile and f"port {port}" in caddyfile
    assert re.findall(r"handle (\S+) \{", caddyfile) == ["/webhooks/conformity"]
    assert {"80:80", "443:443"} <= set(SERVICES["proxy"]["ports"])


def test_prometheus_scrapes_every_replica_of_our_services_on_their_ports() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            scraped |= dict.fromkeys(sd["names"], sd["port"])
    running = set(APP_SERVICES) - ONE_SHOTS
    assert set(scraped) == running
    assert scraped["edge"] == int(environment("edge")["INGEST_PORT"])
    for name in running - {"edge"}:
        assert scraped[name] == int(environment(name)["METRICS_PORT"])


def provisioned_datasources() -> dict[str, str]:
    path = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
    return {ds["uid"]: ds["type"] for ds in yaml.safe_load(path.read_text())["datasources"]}


def test_grafana_provisions_both_data_sources_and_the_dashboard_folder() -> None:
    assert set(provisioned_datasources().values()) == {
        "prometheus",
        "grafana-postgresql-datasource",
    }
    path = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
    (provider,) = yaml.safe_load(path.read_text())["providers"]
    mounts = dict(volume.split(":")[:2] for volume in SERVICES["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert [file.name for file in DASHBOARD_FILES] == ["compliance.json", "pipeline.json"]


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    targets = []
    for file in DASHBOARD_FILES:
        dashboard = json.loads(file.read_text())
        for panel in dashboard["panels"]:
            targets += [(f"{file.stem}: {panel['title']}", target) for target in panel["targets"]]
    return targets


def test_every_panel_uses_a_provisioned_data_source() -> None:
    sources = provisioned_datasources()
    for where, target in dashboard_targets():
        assert sources.get(target["datasource"]["uid"]) == target["datasource"]["type"], where


def exported_metric_names() -> set[str]:
    """Sample names the product's metrics expose (counters end in _total, histograms _bucket)."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def test_pipeline_panels_query_only_metrics_the_code_exports() -> None:
    exported = exported_metric_names()
    queried = {
        name
        for _, target in dashboard_targets()
        if "expr" in target
        for name in re.findall(r"\bconformity_[a-z_]+", target["expr"])
    }
    assert queried and queried <= exported, sorted(queried - exported)
    for required in (
        "ingest_requests_total",
        "ingest_broker_write_seconds_bucket",
        "consumer_lag",
        "consumer_duplicates_total",
        "consumer_dead_letters_total",
    ):
        assert f"conformity_{required}" in queried


def sql_queries() -> list[tuple[str, str]]:
    queries = [
        (where, target["rawSql"]) for where, target in dashboard_targets() if "rawSql" in target
    ]
    for file in DASHBOARD_FILES:
        for variable in json.loads(file.read_text())["templating"]["list"]:
            if variable.get("type") == "query":
                queries.append((f"{file.stem}: ${variable['name']}", variable["query"]))
    return queries


def grafana_to_sql(sql: str, accounts: list[str]) -> str:
    """Expand the Grafana macros the dashboards use into literal SQL, as Grafana would."""
    start, end = TIME_RANGE
    sql = re.sub(r"\$__timeFilter\(([^()]*)\)", rf"(\1) BETWEEN '{start}' AND '{end}'", sql)
    listed = ", ".join("'" + account.replace("'", "''") + "'" for account in accounts)
    sql = sql.replace("${account}", listed).replace("$account", listed)
    assert "$" not in sql, f"a Grafana macro the test does not expand: {sql}"
    return sql


@pytest.fixture
def connection(database_url: str) -> Iterator[Connection]:
    engine = create_engine(database_url)
    with engine.connect() as opened:
        yield opened
    engine.dispose()


# After every sample check's event time, as a live edge's receive time would be.
RECEIVED = datetime(2024, 12, 31, tzinfo=UTC)


def run_queries(connection: Connection, accounts: list[str]) -> dict[str, list[Any]]:
    results = {}
    for where, sql in sql_queries():
        results[where] = list(connection.execute(text(grafana_to_sql(sql, accounts))))
        connection.rollback()
    return results


def test_every_dashboard_query_runs_against_the_empty_schema(connection: Connection) -> None:
    results = run_queries(connection, ["no-such-account"])
    assert len(results) >= 9
    assert all(rows == [] for where, rows in results.items() if "score per account" in where)


async def store_fixtures(database_url: str) -> None:
    """Every sample check, through the `checks` reaction that fills the trend tables."""
    bodies = (fixtures_dir() / "sequence-one-account.jsonl").read_bytes().splitlines()
    for pattern in ("failure-*.json", "success-*.json"):
        bodies += [path.read_bytes() for path in sorted(fixtures_dir().glob(pattern))]
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as opened:
            reaction = REACTIONS["checks"]()
            rejected = await reaction.apply(
                opened, [delivery(b, offset=i, received_at=RECEIVED) for i, b in enumerate(bodies)]
            )
    finally:
        await engine.dispose()
    assert list(rejected) == []


async def test_every_dashboard_query_runs_and_answers_with_checks_stored(
    database_url: str, connection: Connection
) -> None:
    await store_fixtures(database_url)
    accounts = [row[0] for row in connection.execute(text(account_query()))]
    connection.rollback()

    results = run_queries(connection, accounts)

    assert "Hk4Lp9sWd" in accounts
    empty = sorted(where for where, rows in results.items() if not rows)
    assert empty == [], f"queries that found nothing in the sample data: {empty}"


def account_query() -> str:
    (compliance,) = [file for file in DASHBOARD_FILES if file.stem == "compliance"]
    (variable,) = json.loads(compliance.read_text())["templating"]["list"]
    return str(variable["query"])
