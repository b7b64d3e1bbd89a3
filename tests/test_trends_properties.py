"""Property tests: the check tables do not depend on order, duplicates, batching or replays.

Hypothesis draws a few accounts, checks and observations over a handful of UTC days (times
at the day edges included, some without any date so the receive time counts), delivers them
in any order and batching with redeliveries and resends, and compares every table and view
with the reference model in `tests/trend_model.py`. One database serves all examples; the
tables are emptied before each.
"""

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumers.archive import Archive
from consumers.delivery import Delivery
from consumers.history import CheckHistory
from consumers.rebuild import list_accounts, rebuild
from tests.builders import delivery
from tests.trend_model import ARCHIVE_TABLES, CHECK_TABLES, dump, model, read_all
from tests.trend_model import truncate as empty

START = datetime(2024, 3, 30, tzinfo=UTC)
THROUGH = date(2024, 4, 6)
HOUR = 3_600_000
TIMES = [0, 1, 6 * HOUR, 12 * HOUR, 24 * HOUR - 1]  # milliseconds into a day
TIME_FIELDS = ["lastStatusUpdateDate", "lastModifiedDate", "createdDate", None]

PROPERTY_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def checks(draw: st.DrawFn) -> dict[str, Any]:
    """One check body of a small pool of accounts, rules and resources."""
    account = draw(st.sampled_from(["acct-a", "acct-b"]))
    rule = draw(st.sampled_from(["S3-001", "EC2-002", "IAM-038"]))
    resource = draw(st.sampled_from(["bucket", "arn:aws:iam::1:role/x", ""]))
    body: dict[str, Any] = {
        "id": f"ccc:{account}:{rule}:{rule[:3]}:eu-west-1:{resource}",
        "accountId": account,
        "ruleId": rule,
        "riskLevel": draw(st.sampled_from(["LOW", "MEDIUM", "HIGH", "VERY_HIGH", "EXTREME"])),
        "status": draw(st.sampled_from(["SUCCESS", "FAILURE"])),
        "categories": draw(st.lists(st.sampled_from(["security", "cost"]), max_size=2)),
        "compliances": draw(st.lists(st.sampled_from(["PCI", "HIPAA", "NIST4"]), max_size=3)),
        "message": draw(st.sampled_from(["first wording", "second wording"])),
        "notScored": draw(st.sampled_from([False, False, False, True])),
    }
    suppressed = draw(st.sampled_from([None, False, True]))
    if suppressed is not None:
        body["suppressed"] = suppressed
    field = draw(st.sampled_from(TIME_FIELDS))
    if field is not None or draw(st.booleans()):
        day, moment = draw(st.integers(0, 4)), draw(st.sampled_from(TIMES))
        millis = int(START.timestamp() * 1000) + day * 24 * HOUR + moment
        body[field or "lastStatusUpdateDate"] = millis
    return body


@dataclass(frozen=True)
class Scenario:
    """Deliveries in arrival order, cut into batches."""

    batches: list[list[Delivery]]

    @property
    def deliveries(self) -> list[Delivery]:
        return [record for batch in self.batches for record in batch]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Bodies delivered once each, some resent as new deliveries and some redelivered as is."""
    bodies = draw(st.lists(checks(), min_size=1, max_size=20))
    records = [
        delivery(json.dumps(body).encode(), offset=n, received_at=_received(n))
        for n, body in enumerate(bodies)
    ]
    resent = draw(st.lists(st.sampled_from(range(len(bodies))), max_size=3))
    records += [
        delivery(records[i].body, offset=len(records) + k, received_at=_received(len(bodies) + k))
        for k, i in enumerate(resent)
    ]
    records += draw(st.lists(st.sampled_from(records), max_size=4))
    ordered = draw(st.permutations(records))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(ordered) - 1)), max_size=4)))
    edges = [0, *cuts, len(ordered)]
    return Scenario([ordered[a:b] for a, b in itertools.pairwise(edges) if a < b])


def _received(n: int) -> datetime:
    """Late enough for every dated event (a day of clock skew is allowed), across midnights."""
    return START + timedelta(days=4, hours=n * 2)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    created = create_async_engine(database_url)
    yield created
    await created.dispose()


async def _apply(engine: AsyncEngine, batch: list[Delivery], *reactions: Any) -> None:
    for reaction in reactions:
        async with engine.begin() as connection:
            assert await reaction.apply(connection, batch) == []


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(scenario=scenarios(), through=st.sampled_from([date(2024, 4, 1), THROUGH]))
async def test_any_order_duplicates_and_batching_end_as_the_sorted_events(
    engine: AsyncEngine, scenario: Scenario, through: date
) -> None:
    async with engine.begin() as connection:
        await empty(connection)

    for batch in scenario.batches:
        await _apply(engine, batch, CheckHistory())

    async with engine.connect() as connection:
        assert await dump(connection, through) == model(read_all(scenario.deliveries), through)


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(scenario=scenarios(), redelivered=st.lists(st.integers(0, 5), max_size=3))
async def test_replay_restart_and_redelivery_change_nothing(
    engine: AsyncEngine, scenario: Scenario, redelivered: list[int]
) -> None:
    async with engine.begin() as connection:
        await empty(connection, CHECK_TABLES + ARCHIVE_TABLES)
    for batch in scenario.batches:
        await _apply(engine, batch, Archive(), CheckHistory())
    async with engine.connect() as connection:
        live = await dump(connection, THROUGH)

    for index in redelivered:
        await _apply(engine, scenario.batches[index % len(scenario.batches)], CheckHistory())
    async with engine.begin() as connection:
        assert await dump(connection, THROUGH) == live
        await empty(connection)
    await rebuild(engine, await list_accounts(engine), page_size=4)

    async with engine.connect() as connection:
        assert await dump(connection, THROUGH) == live
