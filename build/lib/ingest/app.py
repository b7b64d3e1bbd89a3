"""The HTTP edge: verify each Conformity delivery, write it to Kafka, answer once it is there.

Answers: 202 with the event id once the broker acknowledged the write; 401 for a bad or
missing signature or required header; 413 for a body over the limit; 503 with Retry-After
when the broker cannot take the write in time. Nothing else happens here.
"""

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conformity_pipeline import metrics
from conformity_pipeline.errors import DependencyError, InputError
from conformity_pipeline.settings import Settings
from conformity_pipeline.topics import Header
from ingest.publisher import OutgoingRecord, Publisher
from ingest.signature import SignatureForm, pick_signature, verify

logger = logging.getLogger(__name__)

TEST_MESSAGE = b"Test Message from Cloud Conformity"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Edge:
    """The request handlers, holding the settings, the publisher and the clock."""

    def __init__(self, settings: Settings, publisher: Publisher, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.publisher = publisher
        self.clock = clock

    async def receive(self, request: Request) -> Response:
        """Handle `POST /webhooks/conformity` (see the module docstring for the answers)."""
        with metrics.INGEST_REQUEST_SECONDS.time():
            return await self._receive(request)

    async def _receive(self, request: Request) -> Response:
        try:
            body = await self._read_body(request)
            self._check_required_headers(request)
            form = self._verify(request, body)
            record = self._record(body, form)
            await self._publish(record)
        except InputError as error:
            metrics.INGEST_REQUESTS.labels("refused", error.reason).inc()
            logger.warning("Refused a delivery", extra={"reason": error.reason})
            return JSONResponse({"error": error.reason, "detail": str(error)}, error.status)
        except DependencyError as error:
            metrics.INGEST_REQUESTS.labels("unavailable", "broker-unavailable").inc()
            logger.warning("Kafka did not take a delivery", extra={"error": str(error)})
            retry_after = str(self.settings.ingest_retry_after_seconds)
            return JSONResponse(
                {"error": "broker-unavailable", "detail": str(error)},
                503,
                headers={"Retry-After": retry_after},
            )
        metrics.INGEST_REQUESTS.labels("accepted", "ok").inc()
        metrics.INGEST_SIGNATURE_FORMS.labels(form.value).inc()
        event_id = record.headers[Header.EVENT_ID]
        logger.info(
            "Accepted a delivery",
            extra={"event_id": event_id, "kind": record.headers[Header.KIND], "form": form.value},
        )
        return JSONResponse({"event_id": event_id}, 202)

    async def _publish(self, record: OutgoingRecord) -> None:
        started = time.perf_counter()
        try:
            await self.publisher.publish(record)
        finally:
            metrics.INGEST_BROKER_WRITE_SECONDS.observe(time.perf_counter() - started)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.ingest_max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_required_headers(self, request: Request) -> None:
        for name, expected in self.settings.conformity_required_headers.items():
            got = request.headers.get(name, "").encode()
            if not hmac.compare_digest(got, expected.get_secret_value().encode()):
                raise InputError(
                    f"The required header {name} is missing or wrong.",
                    status=401,
                    reason="missing-required-header",
                )

    def _verify(self, request: Request, body: bytes) -> SignatureForm:
        tokens = self.settings.token_values
        if not tokens and self.settings.conformity_allow_unsigned:
            return SignatureForm.UNSIGNED
        form = verify(body, pick_signature(request.headers), tokens)
        if form is None:
            raise InputError(
                "The signature is missing or does not match this body and the configured "
                "tokens; check the channel's security token.",
                status=401,
                reason="bad-signature",
            )
        return form

    def _record(self, body: bytes, form: SignatureForm) -> OutgoingRecord:
        kind = "test" if body.strip() == TEST_MESSAGE else "check"
        headers = {
            Header.EVENT_ID: str(uuid.uuid4()),
            Header.RECEIVED_AT: self.clock().astimezone(UTC).isoformat(),
            Header.SIGNATURE_FORM: form.value,
            Header.BODY_SHA256: hashlib.sha256(body).hexdigest(),
            Header.KIND: kind,
        }
        return OutgoingRecord(body, _account_key(body), {str(k): v for k, v in headers.items()})

    async def healthz(self, request: Request) -> Response:
        """The process is up."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """The broker is reachable."""
        if await self.publisher.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "broker-unreachable"}, 503)

    async def prometheus(self, request: Request) -> Response:
        """Prometheus metrics of this process (the consumers' too, when run by `up`)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _too_large(limit: int) -> InputError:
    return InputError(
        f"The body is larger than INGEST_MAX_BODY_BYTES={limit}.", status=413, reason="too-large"
    )


def _account_key(body: bytes) -> bytes | None:
    """The check's accountId as the partition key, so one account's events stay in order."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    account = document.get("accountId") if isinstance(document, dict) else None
    return account.encode() if isinstance(account, str) and account else None


def create_app(settings: Settings, publisher: Publisher, clock: Clock = utc_now) -> Starlette:
    """The edge as an ASGI app; the caller starts and stops the publisher."""
    edge = Edge(settings, publisher, clock)
    routes = [
        Route("/webhooks/conformity", edge.receive, methods=["POST"]),
        Route("/healthz", edge.healthz, methods=["GET"]),
        Route("/readyz", edge.readyz, methods=["GET"]),
        Route("/metrics", edge.prometheus, methods=["GET"]),
    ]
    return Starlette(routes=routes)
