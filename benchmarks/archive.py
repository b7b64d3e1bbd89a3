"""Throughput of the archive consumer against Postgres's raw COPY rate. Prints figures only.

Run with `make bench` (or `python -m benchmarks.archive [RECORDS]`). It starts its own Tansu
broker, creates a scratch database on TEST_DATABASE_URL's server, and drops it afterwards.
"""

import asyncio
import hashlib
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import psycopg
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text

from conformity_pipeline.lag import group_lag
from conformity_pipeline.local import start_broker
from conformity_pipeline.schema import upgrade_to_head
from conformity_pipeline.services import build_consumers
from conformity_pipeline.settings import load_settings, to_psycopg_url
from conformity_pipeline.topics import ensure_topics

SERVER = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _bodies(count: int) -> list[bytes]:
    sample = {
        "organisationId": "Qm7_Rt2xZ",
        "ruleId": "S3-001",
        "service": "S3",
        "region": "us-east-1",
        "riskLevel": "VERY_HIGH",
        "status": "FAILURE",
        "message": "Bucket allows public 'READ' access",
        "categories": ["security"],
        "compliances": ["PCI", "HIPAA"],
    }
    return [
        json.dumps(sample | {"accountId": f"acc-{n % 50}", "id": f"ccc:acc-{n % 50}:{n}"}).encode()
        for n in range(count)
    ]


async def _produce(bootstrap: str, topic: str, bodies: list[bytes]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    now = datetime.now(UTC).isoformat().encode()
    started = time.perf_counter()
    try:
        for body in bodies:
            headers = [
                ("event-id", str(uuid.uuid4()).encode()),
                ("received-at", now),
                ("body-sha256", hashlib.sha256(body).hexdigest().encode()),
                ("kind", b"check"),
            ]
            await producer.send(topic, body, key=body[:20], headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


def _copy_rate(database_url: str, bodies: list[bytes]) -> float:
    """Seconds for COPY of the same documents into an unindexed JSONB table."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as connection:
        connection.execute("CREATE TEMP TABLE copy_target (id uuid, document jsonb)")
        started = time.perf_counter()
        with connection.cursor().copy("COPY copy_target FROM STDIN") as copy:
            for body in bodies:
                copy.write_row((uuid.uuid4(), body.decode()))
        return time.perf_counter() - started


async def _consume(settings_kwargs: dict[str, object], count: int) -> float:
    """Seconds from the first stored row to the last (the group join is left out)."""
    settings = load_settings(**settings_kwargs)
    consumers = build_consumers(settings, ["archive"])
    engine = create_engine(settings.sqlalchemy_url)
    started = None
    await consumers.start()
    try:
        while True:
            with engine.connect() as connection:
                done = connection.execute(text("SELECT count(*) FROM webhook_events")).scalar_one()
            if done and started is None:
                started = time.perf_counter()
            if done >= count:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - (started or 0.0)
        group = f"{settings.kafka_consumer_group_prefix}.archive"
        print(f"  lag after run        {group_lag(settings, group)}")
    finally:
        await consumers.stop()
        engine.dispose()
    return elapsed


def main(count: int) -> None:
    broker = start_broker()
    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(to_psycopg_url(SERVER), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = to_psycopg_url(SERVER).rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade_to_head(database_url)
        kwargs: dict[str, object] = {
            "database_url": database_url,
            "kafka_bootstrap_servers": broker.bootstrap_servers,
            "kafka_checks_topic": "bench",
            "kafka_dead_letter_topic": "bench.dlq",
        }
        ensure_topics(load_settings(**kwargs))
        bodies = _bodies(count)
        produce = asyncio.run(_produce(broker.bootstrap_servers, "bench", bodies))
        consume = asyncio.run(_consume(kwargs, count))
        copy = _copy_rate(database_url, bodies)
        print(f"records                {count}")
        print(f"produce (acks=all)     {count / produce:10.0f} records/s")
        print(f"archive consumer       {count / consume:10.0f} records/s (first row to last)")
        print(f"Postgres raw COPY      {count / copy:10.0f} records/s")
    finally:
        broker.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
