"""The `conformity-pipeline` command."""

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import typer
from prometheus_client import start_http_server
from sqlalchemy import make_url

from conformity_pipeline import local
from conformity_pipeline.errors import PipelineError
from conformity_pipeline.logs import configure_logging
from conformity_pipeline.schema import upgrade_to_head
from conformity_pipeline.services import build_consumers, build_edge, run_until_stopped
from conformity_pipeline.settings import Settings, load_settings
from conformity_pipeline.topics import ensure_topics
from ingest.signature import sign

app = typer.Typer(
    help="Keep the full history of Cloud One Conformity check results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

WEBHOOK_PATH = "/webhooks/conformity"


def _settings(**overrides: object) -> Settings:
    settings = load_settings(**overrides)
    configure_logging(settings)
    return settings


def _fail(error: PipelineError) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _run_services(settings: Settings, *, edge: bool, consumer_names: list[str] | None) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        built_edge = build_edge(settings) if edge else None
        consumers = (
            build_consumers(settings, consumer_names) if consumer_names is not None else None
        )
        await run_until_stopped(stop, built_edge, consumers, on_ready=_announce(settings))

    asyncio.run(main())


@app.command()
def migrate() -> None:
    """Upgrade the database at DATABASE_URL to the newest schema (safe to run concurrently)."""
    try:
        settings = _settings()
        upgrade_to_head(settings.sqlalchemy_url)
    except PipelineError as error:
        raise _fail(error) from None
    typer.echo("Schema is at head.")


@app.command()
def ingest() -> None:
    """Run the HTTP edge only: verify deliveries and write them to Kafka."""
    try:
        settings = _settings()
        settings.require_signing()
        ensure_topics(settings)
        _run_services(settings, edge=True, consumer_names=None)
    except PipelineError as error:
        raise _fail(error) from None


@app.command()
def consume(
    names: Annotated[
        list[str] | None, typer.Argument(help="Consumers to run (default: all).")
    ] = None,
) -> None:
    """Run consumers only; each joins its own consumer group."""
    try:
        settings = _settings()
        ensure_topics(settings)
        start_http_server(settings.metrics_port)
        _run_services(settings, edge=False, consumer_names=names or [])
    except PipelineError as error:
        raise _fail(error) from None


@app.command()
def up(
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder for the embedded database and the token.")
    ] = None,
) -> None:
    """Run migrations, the edge and every consumer; embedded Kafka and Postgres if unset."""
    try:
        base = load_settings()
        folder = (data_dir or base.pipeline_data_dir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        overrides: dict[str, object] = {"pipeline_data_dir": folder}
        broker = (
            None
            if base.kafka_bootstrap_servers
            else local.start_broker(log_path=folder / "broker.log")
        )
        try:
            if broker is not None:
                overrides["kafka_bootstrap_servers"] = broker.bootstrap_servers
            if not base.database_url:
                overrides["database_url"] = local.start_postgres(folder)
            if not base.conformity_webhook_tokens and not base.conformity_allow_unsigned:
                overrides["conformity_webhook_tokens"] = local.load_or_create_token(folder)
                typer.echo(
                    f"Token (also in {folder / 'token'}): {overrides['conformity_webhook_tokens']}"
                )
            settings = _settings(**overrides)
            upgrade_to_head(settings.sqlalchemy_url)
            ensure_topics(settings)
            _run_services(settings, edge=True, consumer_names=[])
        finally:
            if broker is not None:
                broker.stop()
    except PipelineError as error:
        raise _fail(error) from None


def _announce(settings: Settings) -> Callable[[int], None]:
    def announce(port: int) -> None:
        host = "127.0.0.1" if settings.ingest_host in ("0.0.0.0", "::") else settings.ingest_host
        url = f"http://{host}:{port}{WEBHOOK_PATH}"
        endpoint = settings.pipeline_data_dir / "endpoint"
        endpoint.parent.mkdir(parents=True, exist_ok=True)
        endpoint.write_text(url + "\n")
        typer.echo(f"POST Conformity checks to: {url}")
        typer.echo(f"Data folder: {settings.pipeline_data_dir.resolve()}")
        database = make_url(settings.database_url or "").render_as_string(hide_password=True)
        typer.echo(f"Database (query it with psql): {database}")
        typer.echo("Ready: the edge and the consumers are running (Ctrl-C stops them).")

    return announce


@app.command()
def send(
    files: Annotated[list[Path], typer.Argument(help="Check files (JSON) to send.")],
    url: Annotated[str | None, typer.Option(help="Webhook URL (default: the local `up`).")] = None,
    token: Annotated[
        str | None, typer.Option(help="Token to sign with (default: `up`'s).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The `up` data folder.")] = None,
) -> None:
    """Sign each file the way Conformity does and POST it, printing the answer per file."""
    folder = data_dir or load_settings().pipeline_data_dir
    try:
        target = url or _read_local(folder / "endpoint", "the edge's URL")
        secret = token or _read_local(folder / "token", "the token")
    except FileNotFoundError as error:
        raise _fail(PipelineError(str(error))) from None
    failures = 0
    with httpx.Client(timeout=30) as client:
        for path in files:
            failures += _send_one(client, path, target, secret)
    raise typer.Exit(code=1 if failures else 0)


def _read_local(path: Path, what: str) -> str:
    if not path.exists():
        raise FileNotFoundError(
            f"No {what} in {path}; start `conformity-pipeline up` or pass --url and --token."
        )
    return path.read_text().strip()


def _send_one(client: httpx.Client, path: Path, url: str, token: str) -> int:
    body = path.read_bytes()
    headers = {"X-TrendMicro-Signature": sign(body, token), "Content-Type": "application/json"}
    try:
        answer = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        typer.echo(f"{path}: failed ({type(error).__name__}: {error})")
        return 1
    typer.echo(f"{path}: {answer.status_code} {answer.text}")
    return 0 if answer.is_success else 1


from conformity_pipeline import ops_commands  # noqa: E402

ops_commands.register(app)


from conformity_pipeline import trend_commands  # noqa: E402

trend_commands.register(app)


def main() -> None:
    """Entry point that turns our own errors into a message and exit code 2."""
    try:
        app()
    except PipelineError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
