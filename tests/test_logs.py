"""Log lines: JSON when asked, readable otherwise, and never a token or a signature."""

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from conformity_pipeline.logs import configure_logging
from conformity_pipeline.services import Edge
from conformity_pipeline.settings import Settings
from ingest.signature import sign
from tests.conftest import TOKEN, SettingsFactory
from tests.test_edge import start_edge


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


async def _exercise(settings: Settings, stream: io.StringIO) -> list[str]:
    configure_logging(settings)
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    edge: Edge = await start_edge(settings)
    body = b'{"accountId":"acc-log","id":"ccc:acc-log:R:S:r:x"}'
    good = sign(body, TOKEN)
    bad = sign(body, "d3JvbmctdG9rZW4=")
    url = f"http://127.0.0.1:{edge.port}/webhooks/conformity"
    try:
        async with httpx.AsyncClient() as client:
            await client.post(url, content=body, headers={"X-TrendMicro-Signature": good})
            await client.post(url, content=body, headers={"X-TrendMicro-Signature": bad})
    finally:
        await edge.stop()
    lines = stream.getvalue().splitlines()
    for secret in (TOKEN, good, bad, "d3JvbmctdG9rZW4="):
        assert not [line for line in lines if secret in line]
    return lines


async def test_json_lines_carry_the_context(
    make_settings: SettingsFactory, captured: io.StringIO
) -> None:
    lines = await _exercise(make_settings(log_format="json"), captured)

    records = [json.loads(line) for line in lines]
    accepted = [r for r in records if r["message"] == "Accepted a delivery"]
    refused = [r for r in records if r["message"] == "Refused a delivery"]
    assert [(r["kind"], r["form"], r["levelname"]) for r in accepted] == [("check", "raw", "INFO")]
    assert [(r["reason"], r["levelname"]) for r in refused] == [("bad-signature", "WARNING")]


async def test_text_lines_are_readable(
    make_settings: SettingsFactory, captured: io.StringIO
) -> None:
    lines = await _exercise(make_settings(log_format="text"), captured)

    [refused] = [line for line in lines if "Refused a delivery" in line]
    assert refused.endswith("WARNING ingest.app: Refused a delivery reason=bad-signature")
