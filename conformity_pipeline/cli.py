"""The `conformity-pipeline` command."""

import asyncio
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
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


def _run_services(
    settings: Settings,
    *,
    edge: bool,
    consumer_names: list[str] | None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        built_edge = build_edge(settings) if edge else None
        consumers = (
            build_consumers(settings, consumer_names) if consumer_names is not None else None
        )
        await run_until_stopped(stop, built_edge, consumers, on_ready=on_ready)

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
        base = _settings()
        folder = (data_dir or base.pipeline_data_dir).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            settings = _settings(pipeline_data_dir=folder, **_embedded(base, folder, stack))
            upgrade_to_head(settings.sqlalchemy_url)
            ensure_topics(settings)
            _run_services(settings, edge=True, consumer_names=[], on_ready=_announce(settings))
    except PipelineError as error:
        raise _fail(error) from None


def _embedded(base: Settings, folder: Path, stack: ExitStack) -> dict[str, object]:
    """Start what `base` leaves unset; the broker stops when `stack` closes."""
    overrides: dict[str, object] = {}
    if not base.kafka_bootstrap_servers:
        broker = local.start_broker(
            port=local.remembered_port(folder / "broker-port"), log_path=folder / "broker.log"
        )
        stack.callback(broker.stop)
        overrides["kafka_bootstrap_servers"] = broker.bootstrap_servers
    if not base.database_url:
        overrides["database_url"] = local.start_postgres(folder)
    if not base.conformity_webhook_tokens and not base.conformity_allow_unsigned:
        token, created = local.load_or_create_token(folder)
        overrides["conformity_webhook_tokens"] = token
        if created:
            typer.echo(f"Generated the webhook token (kept in {folder / 'token'}): {token}")
        else:
            typer.echo(f"Webhook token: the one in {folder / 'token'}")
    return overrides


def _announce(settings: Settings) -> Callable[[int], None]:
    def announce(port: int) -> None:
        host = "127.0.0.1" if settings.ingest_host in ("0.0.0.0", "::") else settings.ingest_host
        url = f"http://{host}:{port}{WEBHOOK_PATH}"
        folder = settings.pipeline_data_dir
        (folder / "endpoint").write_text(url + "\n")
        local.write_env_file(folder / "env", _local_env(settings))
        database = make_url(settings.database_url or "").render_as_string(hide_password=True)
        typer.echo(f"POST Conformity checks to: {url}")
        typer.echo(f"Kafka: {settings.kafka_bootstrap_servers}")
        typer.echo(f"Database (query it with psql): {database}")
        typer.echo(f"Data folder: {folder}")
        typer.echo(f"Point other commands at this pipeline: set -a; . {folder / 'env'}; set +a")
        typer.echo("Ready: the edge and the consumers are running (Ctrl-C stops them).")

    return announce


def _local_env(settings: Settings) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "KAFKA_CHECKS_TOPIC": settings.kafka_checks_topic,
        "KAFKA_DEAD_LETTER_TOPIC": settings.kafka_dead_letter_topic,
        "KAFKA_CONSUMER_GROUP_PREFIX": settings.kafka_consumer_group_prefix,
        "PIPELINE_DATA_DIR": str(settings.pipeline_data_dir),
        # The file is the owner's alone, like the token file beside it.
        "CONFORMITY_WEBHOOK_TOKENS": ",".join(settings.token_values),
    }


@app.command()
def send(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Check files: one JSON check each, or .jsonl with one check per line.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    url: Annotated[str | None, typer.Option(help="Webhook URL (default: the local `up`).")] = None,
    token: Annotated[
        str | None, typer.Option(help="Token to sign with (default: `up`'s).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The `up` data folder.")] = None,
) -> None:
    """Sign each check the way Conformity does and POST it, printing the answer per check."""
    folder = data_dir or load_settings().pipeline_data_dir
    try:
        target = url or _read_local(folder / "endpoint", "edge URL")
        secret = token or _read_local(folder / "token", "token")
    except FileNotFoundError as error:
        raise _fail(PipelineError(str(error))) from None
    failures = 0
    with httpx.Client(timeout=30) as client:
        for label, body in (item for path in files for item in _checks_in(path)):
            failures += _send_one(client, label, body, target, secret)
    raise typer.Exit(code=1 if failures else 0)


def _checks_in(path: Path) -> list[tuple[str, bytes]]:
    """The bodies to send from `path`, each with a label for the report."""
    if path.suffix != ".jsonl":
        return [(str(path), path.read_bytes())]
    lines = path.read_bytes().splitlines()
    return [(f"{path}:{number}", line) for number, line in enumerate(lines, 1) if line.strip()]


def _read_local(path: Path, what: str) -> str:
    if not path.exists():
        raise FileNotFoundError(
            f"There is no {what} in {path}; start `conformity-pipeline up` (or pass "
            "--data-dir), or pass --url and --token."
        )
    return path.read_text().strip()


def _send_one(client: httpx.Client, label: str, body: bytes, url: str, token: str) -> int:
    headers = {"X-TrendMicro-Signature": sign(body, token), "Content-Type": "application/json"}
    try:
        answer = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        typer.echo(f"{label}: failed ({type(error).__name__}: {error})")
        return 1
    typer.echo(f"{label}: {answer.status_code} {answer.text}")
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
