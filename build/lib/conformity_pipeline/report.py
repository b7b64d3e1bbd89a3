"""The daily compliance trend of one account, read from Postgres and drawn in the terminal."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy import Connection, RowMapping, text

RISK_LEVELS = ("LOW", "MEDIUM", "HIGH", "VERY_HIGH", "EXTREME")

_TREND = text(
    """
    SELECT * FROM account_daily_trend_through(:until)
    WHERE account_id = :account_id AND day BETWEEN :first_day AND :until
    ORDER BY day
    """
)

_BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True, slots=True)
class TrendDay:
    """One row of `account_daily_trend`; `score` is None when no check counts that day."""

    day: date
    has_events: bool
    failing: int
    passing: int
    excluded: int
    score: Decimal | None
    new_failures: int
    resolved: int
    failing_by_risk: dict[str, int]


def fetch_trend(
    connection: Connection, account_id: str, *, days: int, until: date
) -> list[TrendDay]:
    """The account's last `days` days up to `until` (a UTC day), oldest first."""
    parameters = {
        "account_id": account_id,
        "until": until,
        "first_day": until - timedelta(days=days - 1),
    }
    return [_trend_day(row) for row in connection.execute(_TREND, parameters).mappings()]


def _trend_day(values: RowMapping) -> TrendDay:
    return TrendDay(
        day=values["day"],
        has_events=values["has_events"],
        failing=values["failing"],
        passing=values["passing"],
        excluded=values["excluded"],
        score=values["score"],
        new_failures=values["new_failures"],
        resolved=values["resolved"],
        failing_by_risk={
            level: values[f"failing_{level.lower()}"]
            for level in RISK_LEVELS
            if values[f"failing_{level.lower()}"]
        },
    )


def render_trend(account_id: str, days: Sequence[TrendDay]) -> RenderableType:
    """A table of the days, each score coloured, and a one-line chart of the score."""
    table = Table(title=f"Compliance of account {account_id} (UTC days)")
    table.add_column("Day", no_wrap=True)
    for heading in ("Failing", "Passing", "Score", "New", "Resolved"):
        table.add_column(heading, justify="right", no_wrap=True)
    table.add_column("Failing by risk")
    for day in days:
        table.add_row(
            day.day.isoformat() + ("" if day.has_events else " ·"),
            str(day.failing),
            str(day.passing),
            Text("-" if day.score is None else f"{day.score:.2f}", style=_colour(day.score)),
            str(day.new_failures),
            str(day.resolved),
            " ".join(f"{level}:{count}" for level, count in day.failing_by_risk.items()),
        )
    return Group(table, _chart(days))


def _colour(score: Decimal | None) -> str:
    if score is None:
        return "dim"
    if score >= 90:
        return "green"
    return "yellow" if score >= 70 else "red"


def sparkline(scores: Sequence[Decimal | None]) -> str:
    """One block per score from 0 (▁) to 100 (█); a space where there is no score."""
    top = len(_BLOCKS) - 1
    return "".join(" " if s is None else _BLOCKS[round(s * top / 100)] for s in scores)


def _chart(days: Sequence[TrendDay]) -> Text:
    scored = [day.score for day in days if day.score is not None]
    if not scored:
        return Text("Score: no check counts towards the score in these days.")
    line = Text("Score ")
    line.append(sparkline([day.score for day in days]), style=_colour(scored[-1]))
    line.append(f"  low {min(scored):.2f}  high {max(scored):.2f}  last {scored[-1]:.2f}")
    line.append("   (· marks a day without events: it repeats the day before)", style="dim")
    return line
