"""The `trend` and `rebuild` commands, added to the `conformity-pipeline` application."""

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conformity_pipeline.errors import DependencyError
from conformity_pipeline.logs import configure_logging
from conformity_pipeline.report import fetch_trend, render_trend
from conformity_pipeline.schema import assert_at_head
from conformity_pipeline.settings import Settings, load_settings
from consumers.rebuild import RebuildResult, count_events, list_accounts, rebuild


def register(app: typer.Typer) -> None:
    """Add `trend` and `rebuild` to `app`."""
    app.command("trend")(trend)
    app.command("rebuild")(rebuild_tables)


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings)
    return settings


def _unreachable(error: OperationalError) -> DependencyError:
    return DependencyError(
        "Could not reach Postgres at DATABASE_URL; check that it runs and that the URL is "
        f"right ({type(error.orig).__name__})."
    )


def trend(
    account: Annotated[str, typer.Argument(help="The Conformity account id.")],
    days: Annotated[int, typer.Option(min=1, max=3660, help="How many days to show.")] = 30,
    until: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Last day shown (default: today, UTC)."),
    ] = None,
) -> None:
    """Print an account's daily compliance table and a chart of its score."""
    settings = _settings()
    last_day = until.date() if until else datetime.now(UTC).date()
    engine = create_engine(settings.sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            assert_at_head(connection)
            rows = fetch_trend(connection, account, days=days, until=last_day)
    except OperationalError as error:
        raise _unreachable(error) from error
    finally:
        engine.dispose()
    if not rows:
        typer.echo(f"No checks of account {account} are recorded up to {last_day}.", err=True)
        raise typer.Exit(code=1)
    Console().print(render_trend(account, rows))


def rebuild_tables(
    accounts: Annotated[
        list[str] | None,
        typer.Option("--account", help="Rebuild only this account (repeatable; default: all)."),
    ] = None,
) -> None:
    """Recompute checks, history and trends from webhook_events; ingestion may keep running."""
    settings = _settings()
    try:
        result = asyncio.run(_rebuild(settings, accounts or []))
    except OperationalError as error:
        raise _unreachable(error) from error
    typer.echo(
        f"Rebuilt {result.accounts} accounts from {result.events} archived checks"
        f" ({result.unreadable} unreadable, skipped)."
    )


async def _rebuild(settings: Settings, only: list[str]) -> RebuildResult:
    engine = create_async_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(assert_at_head)
        accounts = await _chosen_accounts(engine, only)
        with _progress() as progress:
            task = progress.add_task("Rebuilding", total=await count_events(engine, accounts))
            return await rebuild(
                engine, accounts, on_progress=lambda done: progress.advance(task, done)
            )
    finally:
        await engine.dispose()


async def _chosen_accounts(engine: AsyncEngine, only: list[str]) -> list[str]:
    known = await list_accounts(engine)
    if not only:
        return known
    missing = sorted(set(only) - set(known))
    if missing:
        typer.echo(f"No archived checks for the accounts {missing}; skipping them.", err=True)
    return sorted(set(only) & set(known))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
