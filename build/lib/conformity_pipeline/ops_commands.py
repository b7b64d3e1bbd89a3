"""Operator commands: `doctor`, `dead-letters` and `asyncapi`.

They are added to the main command by `register`, called from `conformity_pipeline.cli`.
"""

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from conformity_pipeline import dead_letters as dlq
from conformity_pipeline.asyncapi import asyncapi_document
from conformity_pipeline.doctor import DEFAULT_MAX_LAG, Finding, Verdict, diagnose
from conformity_pipeline.errors import PipelineError
from conformity_pipeline.logs import configure_logging
from conformity_pipeline.settings import Settings, load_settings
from conformity_pipeline.topics import Header

_COLOURS = {Verdict.OK: typer.colors.GREEN, Verdict.WARN: typer.colors.YELLOW}


def register(app: typer.Typer) -> None:
    """Add the operator commands to `app`."""
    app.command()(doctor)
    app.command("dead-letters")(dead_letters)
    app.command()(asyncapi)


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings)
    return settings


def _doctor_settings() -> Settings:
    settings = _settings()
    # The doctor reports an unreachable broker itself; the clients' retry lines are only noise.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


def _fail(error: PipelineError) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def doctor(
    max_lag: Annotated[
        int, typer.Option(help="Warn when a consumer is more records than this behind.")
    ] = DEFAULT_MAX_LAG,
) -> None:
    """Check the settings, the public URL, the broker, the database and the consumers' lag.

    Exits 1 when any check fails, so it can gate a deployment.
    """
    findings = diagnose(_doctor_settings, max_lag=max_lag)
    for finding in findings:
        _show(finding)
    failed = sum(finding.verdict is Verdict.FAIL for finding in findings)
    warned = sum(finding.verdict is Verdict.WARN for finding in findings)
    typer.echo(f"{failed} failed, {warned} warnings, {len(findings)} checks.")
    raise typer.Exit(code=1 if failed else 0)


def _show(finding: Finding) -> None:
    colour = _COLOURS.get(finding.verdict, typer.colors.RED)
    typer.secho(f"{finding.verdict.value:<4}", fg=colour, nl=False)
    typer.echo(f" {finding.check}: {finding.detail}")


def dead_letters(
    replay: Annotated[
        bool, typer.Option("--replay", help="Send the chosen records back to the checks topic.")
    ] = False,
    event_ids: Annotated[
        list[str] | None,
        typer.Option("--event-id", help="Only this event id (repeatable)."),
    ] = None,
    consumer: Annotated[
        str | None, typer.Option(help="Only records this consumer dead-lettered.")
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="With --replay: every record the filters select.")
    ] = False,
) -> None:
    """List dead-lettered records with their reasons, or replay them once the cause is fixed.

    Reading commits nothing and removes nothing, so listing is always complete; replayed
    records keep their event id, and every consumer stores an event id once, so replaying again
    is harmless.
    """
    if replay and not (event_ids or replay_all):
        raise _fail(PipelineError("Choose what to replay: --event-id ID (repeatable) or --all."))
    try:
        settings = _settings()
        letters = dlq.select(dlq.read_dead_letters(settings), event_ids or (), consumer)
        if replay:
            _show_replay(dlq.replay(settings, letters))
        else:
            _show_letters(letters)
    except PipelineError as error:
        raise _fail(error) from None


def _show_letters(letters: list[dlq.DeadLetter]) -> None:
    for letter in letters:
        typer.echo(
            f"partition {letter.partition} offset {letter.offset} "
            f"event {letter.event_id or '-'} "
            f"consumer {letter.header(Header.DEAD_LETTER_CONSUMER) or '-'} "
            f"from {letter.origin}\n"
            f"    reason: {letter.header(Header.DEAD_LETTER_REASON) or '-'}"
        )
    typer.echo(f"{len(letters)} dead letter(s).")


def _show_replay(report: dlq.ReplayReport) -> None:
    for letter in report.replayed:
        typer.echo(f"replayed event {letter.event_id}")
    for letter, reason in report.skipped:
        typer.echo(f"skipped partition {letter.partition} offset {letter.offset}: {reason}")
    typer.echo(f"{len(report.replayed)} replayed, {len(report.skipped)} skipped.")


class DocumentFormat(StrEnum):
    """The forms the AsyncAPI document can be printed in."""

    YAML = "yaml"
    JSON = "json"


def asyncapi(
    fmt: Annotated[DocumentFormat, typer.Option("--format")] = DocumentFormat.YAML,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
) -> None:
    """Print the AsyncAPI 3.0 document of the topics, the edge and the consumer groups."""
    try:
        document = asyncapi_document(load_settings(), as_json=fmt is DocumentFormat.JSON)
    except PipelineError as error:
        raise _fail(error) from None
    if output is None:
        typer.echo(document)
    else:
        output.write_text(document)
