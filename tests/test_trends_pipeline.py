"""The worked example through the whole pipeline: HTTP edge, topic, consumers, tables."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conformity_pipeline.settings import Settings
from conformity_pipeline.topics import Header
from tests.builders import RunningPipeline
from tests.conftest import SettingsFactory
from tests.fixtures import fixtures_dir
from tests.kafka_helpers import eventually, read_topic
from tests.test_trends import EXPECTED, SEQUENCE, assert_matches_the_worked_example, trend_days


class TrendPipeline(RunningPipeline):
    """The edge with the archive and checks consumers, and an engine to read the tables."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, ["archive", "checks"])
        self.engine: AsyncEngine = create_async_engine(settings.sqlalchemy_url)

    async def stop(self) -> None:
        await super().stop()
        await self.engine.dispose()

    async def status(self, body: bytes) -> int:
        return (await self.post(body)).status_code

    async def scalar(self, sql: str) -> Any:
        async with self.engine.connect() as connection:
            return (await connection.execute(text(sql))).scalar_one()


@pytest.fixture
async def pipeline(make_settings: SettingsFactory) -> AsyncIterator[TrendPipeline]:
    running = TrendPipeline(make_settings())
    await running.start()
    yield running
    await running.stop()


async def test_the_worked_example_passes_through_the_whole_pipeline(
    pipeline: TrendPipeline,
) -> None:
    statuses = [await pipeline.status(line) for line in SEQUENCE]
    await pipeline.status((fixtures_dir() / "test-message.txt").read_bytes())

    async def settled() -> bool:
        days = await trend_days(pipeline.engine)
        return bool(days[: len(EXPECTED["days"])] == EXPECTED["days"])

    await eventually(settled, timeout=60)
    assert statuses == [202] * len(SEQUENCE)
    assert_matches_the_worked_example(await trend_days(pipeline.engine))
    assert await pipeline.scalar("SELECT count(*) FROM check_history") == len(SEQUENCE) - 1
    assert await pipeline.scalar("SELECT count(*) FROM checks") == 3


async def test_an_unreadable_check_goes_to_the_dead_letters_and_the_rest_is_stored(
    pipeline: TrendPipeline,
) -> None:
    bad = json.loads(SEQUENCE[0]) | {"riskLevel": "SEVERE"}
    del bad["lastStatusUpdateDate"]

    assert await pipeline.status(json.dumps(bad).encode()) == 202
    assert await pipeline.status(SEQUENCE[1]) == 202

    await eventually(lambda: pipeline.scalar("SELECT count(*) FROM checks"), timeout=60)
    bootstrap = pipeline.settings.require_kafka()

    async def dead_letters() -> list[Any]:
        return await read_topic(bootstrap, pipeline.settings.kafka_dead_letter_topic)

    [record] = await eventually(dead_letters, timeout=30)
    headers = {name: value.decode() for name, value in record.headers}
    assert headers[Header.DEAD_LETTER_CONSUMER] == "checks"
    assert "`riskLevel`" in headers[Header.DEAD_LETTER_REASON]

    async def both_archived() -> bool:
        archived = "SELECT count(*) FROM webhook_events WHERE kind = 'check'"
        return bool(await pipeline.scalar(archived) == 2)

    # The archive is its own consumer group: it may be behind the checks consumer.
    assert await eventually(both_archived)
