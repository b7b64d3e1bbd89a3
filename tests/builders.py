"""Building what the tests feed the product: decoded deliveries and a running pipeline."""

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from conformity_pipeline.services import Consumers, Edge, build_consumers, build_edge
from conformity_pipeline.settings import Settings
from conformity_pipeline.topics import ensure_topics
from consumers.delivery import Delivery, RecordPosition
from ingest.signature import sign
from tests.conftest import TOKEN

RECEIVED = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


def delivery(
    body: bytes | dict[str, Any],
    *,
    offset: int = 0,
    received_at: datetime = RECEIVED,
    kind: str = "check",
) -> Delivery:
    """A decoded record as the edge would have written it to the topic."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return Delivery(
        position=RecordPosition("checks", 0, offset),
        key=None,
        body=raw,
        event_id=uuid.uuid4(),
        received_at=received_at,
        body_sha256=hashlib.sha256(raw).hexdigest(),
        signature_form="raw",
        kind=kind,
    )


class RunningPipeline:
    """The edge and the named consumers, running in this process against real services."""

    def __init__(self, settings: Settings, consumer_names: Sequence[str]) -> None:
        self.settings = settings
        self.edge: Edge = build_edge(settings)
        self.consumers: Consumers = build_consumers(settings, consumer_names)

    async def start(self) -> None:
        await asyncio.to_thread(ensure_topics, self.settings)
        await self.consumers.start()
        await self.edge.start()

    async def stop(self) -> None:
        await self.edge.stop()
        await self.consumers.stop()

    async def post(self, body: bytes) -> httpx.Response:
        """POST `body` signed with the test token, as Conformity would."""
        headers = {"X-TrendMicro-Signature": sign(body, TOKEN)}
        url = f"http://127.0.0.1:{self.edge.port}/webhooks/conformity"
        async with httpx.AsyncClient() as client:
            return await client.post(url, content=body, headers=headers)
