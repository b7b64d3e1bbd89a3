"""One Kafka record from the checks topic, decoded into what every consumer needs."""

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conformity_pipeline.errors import InputError
from conformity_pipeline.topics import Header


class UnreadableRecord(InputError):
    """A record's headers or body cannot be read; it goes to the dead-letter topic."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, status=422, reason=reason)


@dataclass(frozen=True, slots=True)
class RecordPosition:
    """Where a record sits in Kafka."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified webhook request as the edge wrote it to the topic.

    `body` is the exact bytes Conformity sent. `kind` is ``check`` or ``test`` (the channel
    test message).
    """

    position: RecordPosition
    key: bytes | None
    body: bytes
    event_id: uuid.UUID
    received_at: datetime
    body_sha256: str
    signature_form: str
    kind: str

    def document(self) -> Any:
        """The body parsed as strict JSON (no NaN or Infinity); UnreadableRecord otherwise."""
        return parse_json(self.body)


def parse_json(body: bytes) -> Any:
    """Parse untrusted bytes as strict JSON, raising UnreadableRecord with the cause."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as error:
        raise UnreadableRecord(
            f"The body is not UTF-8 text (byte {error.start} is invalid).",
            reason="body-not-utf8",
        ) from error
    except ValueError as error:
        raise UnreadableRecord(
            f"The body is not JSON: {error}.", reason="body-not-json"
        ) from error


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def decode_record(
    position: RecordPosition, key: bytes | None, value: bytes | None, headers: Iterable[Any]
) -> Delivery:
    """Build a Delivery from a raw record; UnreadableRecord when the edge's headers are absent."""
    fields = {name: raw.decode("utf-8", "replace") for name, raw in headers}
    missing = [
        name
        for name in (Header.EVENT_ID, Header.RECEIVED_AT, Header.BODY_SHA256)
        if name not in fields
    ]
    if missing:
        raise UnreadableRecord(
            f"The record lacks the headers {missing}; only the edge should write to this topic.",
            reason="missing-headers",
        )
    try:
        event_id = uuid.UUID(fields[Header.EVENT_ID])
        received_at = datetime.fromisoformat(fields[Header.RECEIVED_AT])
    except ValueError as error:
        raise UnreadableRecord(
            f"The record's event-id or received-at header is malformed: {error}.",
            reason="bad-headers",
        ) from error
    if received_at.tzinfo is None:
        raise UnreadableRecord(
            "The record's received-at header has no time zone.", reason="bad-headers"
        )
    return Delivery(
        position=position,
        key=key,
        body=value or b"",
        event_id=event_id,
        received_at=received_at,
        body_sha256=fields[Header.BODY_SHA256],
        signature_form=fields.get(Header.SIGNATURE_FORM, "unknown"),
        kind=fields.get(Header.KIND, "check"),
    )
