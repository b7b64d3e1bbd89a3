"""Bringing the database schema to Alembic's head, and refusing to run against any other."""

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.exc import OperationalError

import migrations
from conformity_pipeline.errors import DependencyError, SchemaNotAtHead
from conformity_pipeline.settings import masked_url

logger = logging.getLogger(__name__)

# Any fixed number works; it only has to be the same in every process of this product.
_MIGRATION_LOCK = 0x43_4F_4E_46_4F_52_4D


def database_unreachable(url: str, error: OperationalError) -> DependencyError:
    """The error to raise when Postgres at `url` does not answer (the password masked)."""
    return DependencyError(
        f"Could not reach Postgres at DATABASE_URL={masked_url(url)}; check that it runs and "
        f"that the URL is right ({type(error.orig).__name__})."
    )


def alembic_config() -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return config


def head_revisions() -> set[str]:
    """The revisions the code expects the database to be at."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def upgrade_to_head(sqlalchemy_url: str) -> None:
    """Upgrade the database to head while holding an advisory lock.

    Safe to run from several processes at once: the others wait for the lock, then find the
    schema already at head and do nothing.
    """
    engine = create_engine(sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            try:
                _upgrade(connection)
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK}
                )
                connection.commit()
    except OperationalError as error:
        raise database_unreachable(sqlalchemy_url, error) from error
    finally:
        engine.dispose()


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    before = current_revisions(connection)
    command.upgrade(config, "head")
    connection.commit()
    logger.info(
        "Schema at head",
        extra={"from_revisions": sorted(before), "to_revisions": sorted(head_revisions())},
    )


def current_revisions(connection: Connection) -> set[str]:
    """The revisions recorded in the database's `alembic_version` table."""
    return set(MigrationContext.configure(connection).get_current_heads())


def assert_at_head(connection: Connection) -> None:
    """Raise SchemaNotAtHead, saying what to run, unless the schema is exactly at head."""
    current, expected = current_revisions(connection), head_revisions()
    if current != expected:
        raise SchemaNotAtHead(
            f"The database schema is at {sorted(current) or 'no revision'} but this version "
            f"expects {sorted(expected)}; run `conformity-pipeline migrate` first."
        )
