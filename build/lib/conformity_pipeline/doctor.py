"""`conformity-pipeline doctor`: checks the settings and what they point at, and says what to fix.

Every check gives one or more findings: ``ok``, ``warn`` (it works, but have a look) or ``fail``
(the stack cannot work until this is fixed). A check that needs the broker or the database
reports a failure when that dependency is unreachable, and the others still run.
"""

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from sqlalchemy import create_engine, make_url, pool
from sqlalchemy.exc import SQLAlchemyError

from conformity_pipeline.dead_letters import count_dead_letters
from conformity_pipeline.errors import ConfigError, SchemaNotAtHead
from conformity_pipeline.lag import group_lag
from conformity_pipeline.schema import assert_at_head
from conformity_pipeline.settings import Settings, load_settings
from consumers.registry import default_reactions

logger = logging.getLogger(__name__)

# The path the edge serves deliveries on (see ingest/app.py).
EDGE_PATH = "/webhooks/conformity"

DEFAULT_MAX_LAG = 10_000


class Verdict(StrEnum):
    """How a check came out."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the doctor's report: what was checked, how it came out, what to do."""

    check: str
    verdict: Verdict
    detail: str


def diagnose(
    load: Callable[[], Settings] = load_settings, max_lag: int = DEFAULT_MAX_LAG
) -> list[Finding]:
    """Load the settings and run every check; never raises for a problem it can describe."""
    try:
        settings = load()
    except ConfigError as error:
        return [Finding("settings", Verdict.FAIL, str(error))]
    findings = [Finding("settings", Verdict.OK, "Every variable parses.")]
    findings.append(check_tokens(settings))
    findings.append(check_public_url(settings.public_url))
    findings += check_broker(settings, max_lag)
    findings += check_database(settings)
    return findings


def check_tokens(settings: Settings) -> Finding:
    """Signing is configured: tokens (whose charset Settings already checked) or unsigned."""
    count = len(settings.token_values)
    if count:
        return Finding(
            "webhook tokens",
            Verdict.OK,
            f"{count} token(s), all in the base64 alphabet Conformity accepts.",
        )
    try:
        settings.require_signing()
    except ConfigError as error:
        return Finding("webhook tokens", Verdict.FAIL, str(error))
    return Finding(
        "webhook tokens",
        Verdict.WARN,
        "CONFORMITY_ALLOW_UNSIGNED=true and no token is set, so anyone who can reach the edge "
        "can write checks; set CONFORMITY_WEBHOOK_TOKENS to the channel's security token.",
    )


def check_public_url(url: str | None) -> Finding:
    """PUBLIC_URL follows Conformity's rules: https, a host name, no IP address, no localhost."""
    if not url:
        return Finding(
            "public url",
            Verdict.WARN,
            "PUBLIC_URL is not set; set it to the https:// address Conformity will call, "
            f"e.g. https://conformity.example.com{EDGE_PATH}, so this check can verify it.",
        )
    problems = public_url_problems(url)
    if problems:
        return Finding("public url", Verdict.FAIL, " ".join(problems))
    advice = public_url_advice(url)
    if advice:
        return Finding("public url", Verdict.WARN, " ".join(advice))
    return Finding("public url", Verdict.OK, f"{url} is a URL Conformity accepts.")


def public_url_problems(url: str) -> list[str]:
    """Why Conformity would refuse `url` as a webhook address (empty when it would accept it)."""
    parts = urlsplit(url.strip())
    problems = []
    if parts.scheme != "https":
        problems.append(
            "PUBLIC_URL must start with https://, because Conformity delivers only over HTTPS; "
            "put the TLS proxy in front of the edge and use its address."
        )
    host = parts.hostname
    if not host:
        problems.append("PUBLIC_URL has no host name; write it as https://HOST/PATH.")
    elif _is_ip_address(host):
        problems.append(
            f"PUBLIC_URL's host {host} is an IP address, which Conformity refuses; point a DNS "
            "name at the proxy and use that name."
        )
    elif host == "localhost" or host.endswith(".localhost"):
        problems.append(
            f"PUBLIC_URL's host {host} is localhost, which Conformity can neither accept nor "
            "reach; use a DNS name that resolves to the proxy from the internet."
        )
    return problems


def public_url_advice(url: str) -> list[str]:
    """Things about an acceptable `url` that are probably mistakes."""
    parts = urlsplit(url.strip())
    advice = []
    if parts.path.rstrip("/") != EDGE_PATH:
        advice.append(
            f"PUBLIC_URL's path is {parts.path or '/'!r} but the edge serves {EDGE_PATH}; "
            "unless your proxy rewrites the path, end the URL with it."
        )
    if "." not in (parts.hostname or ""):
        advice.append(
            f"PUBLIC_URL's host {parts.hostname} has no dot, so it cannot resolve on the "
            "internet; use the fully qualified name."
        )
    return advice


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_broker(settings: Settings, max_lag: int = DEFAULT_MAX_LAG) -> list[Finding]:
    """The broker answers; the topics exist; how far each consumer is behind; dead letters."""
    servers = settings.kafka_bootstrap_servers
    if not servers:
        return [
            Finding(
                "broker",
                Verdict.FAIL,
                "KAFKA_BOOTSTRAP_SERVERS is not set; set it to host:port[,host:port...].",
            )
        ]
    timeout_ms = int(settings.kafka_publish_timeout_seconds * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=servers.split(","),
            client_id=f"{settings.kafka_consumer_group_prefix}-doctor",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except KafkaError as error:
        return [_broker_unreachable(servers, error)]
    try:
        return _broker_findings(admin, settings, max_lag)
    except KafkaError as error:
        return [_broker_unreachable(servers, error)]
    finally:
        admin.close()


def _broker_unreachable(servers: str, error: KafkaError) -> Finding:
    return Finding(
        "broker",
        Verdict.FAIL,
        f"Could not reach the Kafka broker at KAFKA_BOOTSTRAP_SERVERS={servers} "
        f"({type(error).__name__}); check that it runs and that the address is the one this "
        "process can reach (inside compose: kafka:9092).",
    )


def _broker_findings(admin: KafkaAdminClient, settings: Settings, max_lag: int) -> list[Finding]:
    findings = [Finding("broker", Verdict.OK, "The Kafka broker answers.")]
    topics = set(admin.list_topics())
    wanted = [settings.kafka_checks_topic, settings.kafka_dead_letter_topic]
    missing = [name for name in wanted if name not in topics]
    if missing:
        findings.append(
            Finding(
                "topics",
                Verdict.WARN,
                f"The topics {missing} do not exist yet; `conformity-pipeline ingest` and "
                "`consume` create them when they start.",
            )
        )
        return findings
    findings.append(Finding("topics", Verdict.OK, f"{wanted} exist."))
    groups = {str(group["group_id"]) for group in admin.list_groups()}
    names = default_reactions(settings)
    findings += [_lag_finding(settings, name, groups, max_lag) for name in names]
    findings.append(_dead_letter_finding(count_dead_letters(settings)))
    return findings


def _lag_finding(settings: Settings, name: str, groups: set[str], max_lag: int) -> Finding:
    group = f"{settings.kafka_consumer_group_prefix}.{name}"
    check = f"lag {name}"
    try:
        lag = group_lag(settings, group)
    except KafkaError as error:
        return Finding(
            check,
            Verdict.WARN,
            f"Could not read the committed offsets of {group} ({type(error).__name__}); "
            "run the doctor again, and look at the broker's logs if this persists.",
        )
    if group not in groups and lag:
        return Finding(
            check,
            Verdict.WARN,
            f"The consumer group {group} has not joined and {lag} records wait for it; "
            f"start `conformity-pipeline consume {name}`.",
        )
    if lag > max_lag:
        return Finding(
            check,
            Verdict.WARN,
            f"{lag} records behind (more than {max_lag}); run more replicas of this consumer "
            "(up to the partition count) or look at its logs for errors.",
        )
    return Finding(check, Verdict.OK, f"{lag} records behind.")


def _dead_letter_finding(count: int) -> Finding:
    if count:
        return Finding(
            "dead letters",
            Verdict.WARN,
            f"{count} record(s) on the dead-letter topic; list them with "
            "`conformity-pipeline dead-letters`, fix the cause, then replay them with --replay.",
        )
    return Finding("dead letters", Verdict.OK, "The dead-letter topic is empty.")


def check_database(settings: Settings) -> list[Finding]:
    """Postgres answers at DATABASE_URL and its schema is at this version's head."""
    try:
        url = settings.sqlalchemy_url
    except ConfigError as error:
        return [Finding("database", Verdict.FAIL, str(error))]
    shown = make_url(url).set(drivername="postgresql").render_as_string(hide_password=True)
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            reached = Finding("database", Verdict.OK, f"Postgres answers at {shown}.")
            try:
                assert_at_head(connection)
            except SchemaNotAtHead as error:
                return [reached, Finding("schema", Verdict.FAIL, str(error))]
            return [reached, Finding("schema", Verdict.OK, "The schema is at head.")]
    except SQLAlchemyError as error:
        return [
            Finding(
                "database",
                Verdict.FAIL,
                f"Could not reach Postgres at {shown} ({type(error).__name__}); check that it "
                "runs, that DATABASE_URL names it as this process can reach it, and the "
                "password.",
            )
        ]
    finally:
        engine.dispose()
