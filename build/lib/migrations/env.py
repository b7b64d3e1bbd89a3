"""Alembic environment: runs on the connection `conformity_pipeline.schema` hands it.

Run through `conformity-pipeline migrate`, which holds a Postgres advisory lock so that several
processes starting at once do not race. Plain `alembic upgrade head` works too and reads
`DATABASE_URL` from the same settings object as the rest of the product.
"""

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from conformity_pipeline.settings import load_settings
from conformity_pipeline.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(load_settings().sqlalchemy_url, poolclass=pool.NullPool)
    with engine.connect() as fresh:
        _run(fresh)


run_migrations_online()
