"""Shared fixtures: a real Tansu broker, real Postgres databases, per-test topics and groups.

`TEST_DATABASE_URL` names the server the tests use (default: the local Postgres on
127.0.0.1:5432). Each test that asks for `database_url` gets a fresh database copied from a
migrated template, so tests never see each other's rows.
"""

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conformity_pipeline.local import LocalBroker, start_broker
from conformity_pipeline.schema import upgrade_to_head
from conformity_pipeline.settings import Settings, load_settings, to_psycopg_url

SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = "bm9ydGh3aW5kLWRlbW8tdG9rZW4tMjAyNg=="


def _admin_execute(statement: str) -> None:
    engine = create_engine(to_psycopg_url(SERVER_URL), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def database_url_for(name: str) -> str:
    """The URL of database `name` on the test server."""
    return make_url(to_psycopg_url(SERVER_URL)).set(database=name).render_as_string(False)


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """One Tansu broker process for the whole session (tests use their own topics)."""
    local = start_broker()
    yield local
    local.stop()


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A database migrated to head, copied for each test."""
    name = f"cp_template_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    upgrade_to_head(database_url_for(name))
    yield name
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    yield database_url_for(name)
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(template_database: str) -> Iterator[str]:
    """A fresh database at schema head, for this test alone."""
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield database_url_for(name)
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(broker: LocalBroker, database_url: str) -> SettingsFactory:
    """Settings for this test: its own topics, consumer groups and database."""
    unique = uuid.uuid4().hex[:10]

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "kafka_bootstrap_servers": broker.bootstrap_servers,
            "conformity_webhook_tokens": TOKEN,
            "kafka_checks_topic": f"checks-{unique}",
            "kafka_dead_letter_topic": f"checks-{unique}.dlq",
            "kafka_consumer_group_prefix": f"test-{unique}",
            "ingest_port": 0,
            "consumer_retry_backoff_seconds": 0.2,
            "kafka_publish_timeout_seconds": 5.0,
        }
        return load_settings(**(values | overrides))

    return make
