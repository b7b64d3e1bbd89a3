"""Tests for the `checks` reaction, the trend tables and views, the rebuild and the commands."""

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typer.testing import CliRunner

from conformity_pipeline.cli import app
from consumers.archive import Archive
from consumers.delivery import Delivery
from consumers.history import CheckHistory
from consumers.rebuild import list_accounts, rebuild
from consumers.runtime import Rejection
from consumers.trends import affected_days, merge_spans
from tests.builders import delivery
from tests.fixtures import fixtures_dir
from tests.trend_model import dump, model, read_all, truncate

SEQUENCE = (fixtures_dir() / "sequence-one-account.jsonl").read_bytes().splitlines()
EXPECTED: dict[str, Any] = json.loads(
    (fixtures_dir() / "sequence-one-account.expected.json").read_text()
)
ACCOUNT = EXPECTED["account"]
LAST_DAY = date.fromisoformat(EXPECTED["days"][-1]["day"])
THROUGH = LAST_DAY + timedelta(days=4)
RISKS = ("low", "medium", "high", "very_high", "extreme")
DAY = 86_400_000  # milliseconds
T0 = 1718409600000  # 2024-06-15T00:00:00Z


def sequence_deliveries() -> list[Delivery]:
    return [delivery(line, offset=n) for n, line in enumerate(SEQUENCE)]


def check(rule: str = "R1", **changes: Any) -> dict[str, Any]:
    """A valid check of account acct-1; each test changes one thing."""
    document: dict[str, Any] = {
        "id": f"ccc:acct-1:{rule}:S3:us-east-1:res-{rule}",
        "accountId": "acct-1",
        "ruleId": rule,
        "service": "S3",
        "region": "us-east-1",
        "resource": f"res-{rule}",
        "riskLevel": "HIGH",
        "status": "FAILURE",
        "categories": ["security"],
        "compliances": ["PCI"],
        "lastStatusUpdateDate": T0 + 3_600_000,
    }
    return document | changes


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    created = create_async_engine(database_url)
    yield created
    await created.dispose()


async def apply(
    engine: AsyncEngine, deliveries: Sequence[Delivery], *reactions: Any
) -> list[Rejection]:
    rejections: list[Rejection] = []
    for reaction in reactions or (CheckHistory(),):
        async with engine.begin() as connection:
            rejections += await reaction.apply(connection, deliveries)
    return rejections


async def apply_one_by_one(engine: AsyncEngine, deliveries: Sequence[Delivery]) -> None:
    for record in deliveries:
        await apply(engine, [record])


async def trend_days(engine: AsyncEngine, through: date = THROUGH) -> list[dict[str, Any]]:
    """The account's filled trend in the shape of sequence-one-account.expected.json."""
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT * FROM account_daily_trend_through(:through) "
                "WHERE account_id = :account ORDER BY day"
            ),
            {"through": through, "account": ACCOUNT},
        )
        return [_expected_shape(row) for row in result.mappings()]


def _expected_shape(row: Any) -> dict[str, Any]:
    return {
        "day": row["day"].isoformat(),
        "failing": row["failing"],
        "passing": row["passing"],
        "score": None if row["score"] is None else float(row["score"]),
        "new_failures": row["new_failures"],
        "resolved": row["resolved"],
        "failing_by_risk": {
            risk.upper(): row[f"failing_{risk}"] for risk in RISKS if row[f"failing_{risk}"]
        },
    }


def assert_matches_the_worked_example(days: list[dict[str, Any]]) -> None:
    expected = EXPECTED["days"]
    assert days[: len(expected)] == expected
    after = days[len(expected) :]
    assert [day["day"] for day in after] == [
        (LAST_DAY + timedelta(days=n)).isoformat() for n in range(1, 5)
    ]
    quiet = expected[-1] | {"new_failures": 0, "resolved": 0}
    assert [day | {"day": None} for day in after] == [quiet | {"day": None}] * 4


async def test_the_worked_example_ends_as_expected(engine: AsyncEngine) -> None:
    await apply_one_by_one(engine, sequence_deliveries())

    assert_matches_the_worked_example(await trend_days(engine))


async def test_the_worked_example_in_one_batch_ends_the_same(engine: AsyncEngine) -> None:
    await apply(engine, sequence_deliveries())

    assert_matches_the_worked_example(await trend_days(engine))


async def test_days_are_utc_days_whatever_the_session_time_zone(database_url: str) -> None:
    east = create_async_engine(database_url, connect_args={"options": "-c timezone=Etc/GMT-14"})
    west = create_async_engine(database_url, connect_args={"options": "-c timezone=Etc/GMT+11"})
    try:
        await apply_one_by_one(east, sequence_deliveries())

        assert_matches_the_worked_example(await trend_days(west))
    finally:
        await east.dispose()
        await west.dispose()


async def test_every_timestamp_column_is_time_zone_aware(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'"
            )
        )
        assert result.all() == []


async def test_a_redelivered_batch_changes_nothing(engine: AsyncEngine) -> None:
    deliveries = sequence_deliveries()
    await apply(engine, deliveries)
    async with engine.connect() as connection:
        before = await dump(connection, THROUGH)

    await apply(engine, deliveries)
    await apply(engine, deliveries[2:5])

    async with engine.connect() as connection:
        assert await dump(connection, THROUGH) == before


async def test_a_late_event_never_overwrites_a_newer_state(engine: AsyncEngine) -> None:
    await apply(engine, [delivery(check(status="SUCCESS", lastStatusUpdateDate=T0 + 2 * DAY))])
    await apply(engine, [delivery(check(status="FAILURE", lastStatusUpdateDate=T0 + DAY))])
    await apply(engine, [delivery(check(status="SUCCESS", lastStatusUpdateDate=T0))])

    async with engine.connect() as connection:
        state = (await connection.execute(text("SELECT * FROM checks"))).mappings().one()
        history = await connection.execute(text("SELECT count(*) FROM check_history"))
    moment = datetime.fromtimestamp(T0 / 1000, tz=UTC)
    assert state["status"] == "SUCCESS"
    assert state["last_event_at"] == moment + timedelta(days=2)
    assert state["status_since"] == moment + timedelta(days=2)
    assert state["first_seen_at"] == moment
    assert history.scalar_one() == 3


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest-first", "newest-last"])
async def test_the_same_check_twice_in_a_batch_keeps_the_newest(
    engine: AsyncEngine, newest_first: bool
) -> None:
    older = delivery(check(status="FAILURE", lastStatusUpdateDate=T0))
    newer = delivery(check(status="SUCCESS", lastStatusUpdateDate=T0 + 60_000))

    await apply(engine, [newer, older] if newest_first else [older, newer])

    async with engine.connect() as connection:
        status = await connection.execute(text("SELECT status FROM checks"))
        assert status.scalar_one() == "SUCCESS"


@pytest.mark.parametrize("together", [True, False], ids=["one-batch", "two-batches"])
async def test_two_bodies_at_the_same_time_settle_on_the_failure(
    engine: AsyncEngine, together: bool
) -> None:
    passing, failing = delivery(check(status="SUCCESS")), delivery(check(status="FAILURE"))

    if together:
        await apply(engine, [failing, passing])
    else:
        await apply(engine, [failing])
        await apply(engine, [passing])

    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT status FROM check_history"))
        state = await connection.execute(text("SELECT status FROM checks"))
        assert rows.scalars().all() == ["FAILURE"]
        assert state.scalar_one() == "FAILURE"


async def test_test_messages_are_skipped_and_bad_checks_are_rejected(engine: AsyncEngine) -> None:
    test_message = delivery((fixtures_dir() / "test-message.txt").read_bytes(), kind="test")
    bad = delivery(check(riskLevel="SEVERE"), offset=1)
    good = delivery(check(), offset=2)

    rejections = await apply(engine, [test_message, bad, good])

    assert [r.position.offset for r in rejections] == [1]
    assert "`riskLevel`" in rejections[0].reason
    async with engine.connect() as connection:
        stored = await connection.execute(text("SELECT count(*) FROM checks"))
        assert stored.scalar_one() == 1


async def test_not_scored_and_suppressed_checks_are_kept_but_not_counted(
    engine: AsyncEngine,
) -> None:
    await apply(
        engine,
        [
            delivery(check("R1", notScored=True)),
            delivery(check("R2", suppressed=True)),
            delivery(check("R3", status="SUCCESS")),
        ],
    )

    async with engine.connect() as connection:
        stored = await connection.execute(text("SELECT count(*) FROM checks"))
        day = (
            (
                await connection.execute(
                    text("SELECT * FROM account_daily_trend_through('2024-06-15')")
                )
            )
            .mappings()
            .one()
        )
    assert stored.scalar_one() == 3
    assert (day["failing"], day["passing"], day["excluded"]) == (0, 1, 2)
    assert (day["score"], day["new_failures"]) == (Decimal("100.00"), 0)


async def test_episodes_and_time_to_resolve_of_the_worked_example(engine: AsyncEngine) -> None:
    await apply_one_by_one(engine, sequence_deliveries())

    async with engine.connect() as connection:
        episodes = await connection.execute(
            text(
                "SELECT rule_id, risk_level, resolved, time_to_resolve FROM failure_episodes "
                "ORDER BY rule_id"
            )
        )
        means = await connection.execute(
            text(
                "SELECT risk_level, resolved_failures, mean_hours_to_resolve "
                "FROM account_time_to_resolve ORDER BY risk_level"
            )
        )
        assert [tuple(row) for row in episodes] == [
            ("EC2-002", "HIGH", True, timedelta(hours=68)),
            ("IAM-038", "EXTREME", True, timedelta(hours=68)),
            ("S3-001", "VERY_HIGH", True, timedelta(hours=23)),
        ]
        assert [tuple(row) for row in means] == [
            ("EXTREME", 1, Decimal("68.00")),
            ("HIGH", 1, Decimal("68.00")),
            ("VERY_HIGH", 1, Decimal("23.00")),
        ]


async def test_breakdown_of_a_day_of_the_worked_example(engine: AsyncEngine) -> None:
    await apply(engine, sequence_deliveries())

    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT dimension, value, failing, passing "
                "FROM account_daily_breakdown_through(:through) WHERE day = '2024-06-17'"
            ),
            {"through": THROUGH},
        )
        breakdown = {(row.dimension, row.value): (row.failing, row.passing) for row in rows}
    assert breakdown == {
        ("risk_level", "VERY_HIGH"): (0, 1),
        ("risk_level", "HIGH"): (1, 0),
        ("risk_level", "EXTREME"): (1, 0),
        ("category", "security"): (2, 1),
        ("compliance", "PCI"): (1, 1),
        ("compliance", "GDPR"): (0, 1),
        ("compliance", "NIST-CSF"): (1, 0),
        ("compliance", "SOC2"): (1, 0),
        ("service", "S3"): (0, 1),
        ("service", "EC2"): (1, 0),
        ("service", "IAM"): (1, 0),
        ("region", "us-east-1"): (0, 1),
        ("region", "eu-west-1"): (1, 0),
        ("region", "global"): (1, 0),
        ("rule", "S3-001"): (0, 1),
        ("rule", "EC2-002"): (1, 0),
        ("rule", "IAM-038"): (1, 0),
    }


async def test_current_state_views_of_the_worked_example(engine: AsyncEngine) -> None:
    await apply(engine, sequence_deliveries()[:6])

    async with engine.connect() as connection:
        compliance = (
            (await connection.execute(text("SELECT * FROM account_compliance"))).mappings().one()
        )
        failing = await connection.execute(
            text("SELECT rule_id, failing_since FROM failing_checks ORDER BY rule_id")
        )
        assert [tuple(row) for row in failing] == [
            ("EC2-002", datetime(2024, 6, 16, 13, tzinfo=UTC)),
            ("IAM-038", datetime(2024, 6, 15, 12, tzinfo=UTC)),
        ]
    assert (compliance["failing"], compliance["passing"], compliance["score"]) == (
        2,
        1,
        Decimal("33.33"),
    )


async def test_the_filled_view_runs_from_the_first_day_to_today(engine: AsyncEngine) -> None:
    await apply(engine, sequence_deliveries())

    async with engine.connect() as connection:
        span = await connection.execute(
            text(
                "SELECT min(day), max(day), count(*), (now() AT TIME ZONE 'UTC')::date "
                "FROM account_daily_trend"
            )
        )
        first, last, days, today = span.one()
    assert (first, last) == (date(2024, 6, 15), today)
    assert days == (today - first).days + 1


async def test_a_late_event_recomputes_only_the_days_up_to_the_next_observation(
    engine: AsyncEngine,
) -> None:
    for day in range(10):
        await apply(engine, [delivery(check("R1", lastStatusUpdateDate=T0 + day * DAY))])
        await apply(engine, [delivery(check("R2", lastStatusUpdateDate=T0 + day * DAY))])
    late = datetime.fromtimestamp((T0 + 2 * DAY + 1000) / 1000, tz=UTC)

    async with engine.begin() as connection:
        days = await affected_days(
            connection, "acct-1", [("ccc:acct-1:R1:S3:us-east-1:res-R1", late)]
        )

    assert days == [date(2024, 6, 17), date(2024, 6, 18)]


@pytest.mark.parametrize(
    ("spans", "merged"),
    [
        pytest.param([], [], id="none"),
        pytest.param([(1, 3), (5, 6)], [(1, 3), (5, 6)], id="apart"),
        pytest.param([(5, 6), (1, 4)], [(1, 6)], id="adjacent"),
        pytest.param([(1, 9), (2, 3)], [(1, 9)], id="inside"),
        pytest.param([(4, None), (1, 2), (2, 5)], [(1, None)], id="open-ended"),
    ],
)
def test_merge_spans(
    spans: list[tuple[int, int | None]], merged: list[tuple[int, int | None]]
) -> None:
    def day(n: int | None) -> date | None:
        return None if n is None else date(2024, 1, n)

    result = merge_spans([(date(2024, 1, a), day(b)) for a, b in spans])

    assert result == [(date(2024, 1, a), day(b)) for a, b in merged]


async def test_the_rebuild_from_the_archive_gives_the_live_rows(engine: AsyncEngine) -> None:
    for record in sequence_deliveries():
        await apply(engine, [record], Archive(), CheckHistory())
    async with engine.begin() as connection:
        live = await dump(connection, THROUGH)
        await truncate(connection)

    result = await rebuild(engine, await list_accounts(engine), page_size=3)

    async with engine.connect() as connection:
        assert await dump(connection, THROUGH) == live
    assert (result.accounts, result.events, result.unreadable) == (1, 7, 0)


async def test_a_rebuild_over_live_tables_changes_nothing(engine: AsyncEngine) -> None:
    await apply(engine, sequence_deliveries(), Archive(), CheckHistory())
    async with engine.connect() as connection:
        live = await dump(connection, THROUGH)

    await rebuild(engine, [ACCOUNT])

    async with engine.connect() as connection:
        assert await dump(connection, THROUGH) == live


async def test_concurrent_batches_neither_deadlock_nor_double_count(engine: AsyncEngine) -> None:
    accounts = [f"acct-{n}" for n in range(3)]
    records = [
        delivery(
            {
                **check(f"R{n % 4}", status="FAILURE" if n % 3 else "SUCCESS"),
                "id": f"ccc:{account}:R{n % 4}:S3:us-east-1:res",
                "accountId": account,
                "lastStatusUpdateDate": T0 + n * 3_600_000,
            },
            offset=n,
        )
        for n in range(40)
        for account in accounts
    ]
    forward, backward = records[::2], records[1::2][::-1]

    async def run(part: list[Delivery]) -> None:
        for start in range(0, len(part), 6):
            await apply(engine, part[start : start + 6])

    await asyncio.wait_for(asyncio.gather(run(forward), run(backward)), timeout=60)

    async with engine.connect() as connection:
        assert await dump(connection, THROUGH) == model(read_all(records), THROUGH)


runner = CliRunner()


async def test_the_trend_command_prints_the_table_and_the_chart(
    engine: AsyncEngine, database_url: str
) -> None:
    await apply(engine, sequence_deliveries())

    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["trend", ACCOUNT, "--days", "6", "--until", "2024-06-20"],
        env={"DATABASE_URL": database_url, "COLUMNS": "160"},
    )

    assert result.exit_code == 0, result.output
    for shown in ("2024-06-15", "2024-06-20", "33.33", "66.67", "100.00", "EXTREME:1"):
        assert shown in result.output
    assert "Score ▃▃▃▆██" in result.output


async def test_the_trend_command_says_when_an_account_is_unknown(database_url: str) -> None:
    result = await asyncio.to_thread(
        runner.invoke, app, ["trend", "nobody"], env={"DATABASE_URL": database_url}
    )

    assert result.exit_code == 1
    assert "No checks of account nobody" in result.output


async def test_the_rebuild_command_rebuilds_every_account(
    engine: AsyncEngine, database_url: str
) -> None:
    await apply(engine, sequence_deliveries(), Archive())

    result = await asyncio.to_thread(
        runner.invoke, app, ["rebuild"], env={"DATABASE_URL": database_url}
    )

    assert result.exit_code == 0, result.output
    assert "Rebuilt 1 accounts from 7 archived checks (0 unreadable, skipped)." in result.output
    assert_matches_the_worked_example(await trend_days(engine))
