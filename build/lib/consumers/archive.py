"""The archive: every verified delivery ends in `webhook_events`, once per distinct body.

Deduplication: a delivery is one edge request (its event id); an event is one distinct body
(its SHA-256). The same body received twice is one event whose `delivery_count` is 2; a Kafka
redelivery of a request already stored changes nothing.

Postgres cannot hold U+0000 or unpaired surrogates in JSONB. For such a document, `document`
holds the JSON with each of those characters written as the six characters ``\\uXXXX``, and
`raw_body` holds the exact bytes received; `raw_body` is NULL for every other row.
"""

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from conformity_pipeline import metrics
from conformity_pipeline.tables import webhook_deliveries
from consumers.delivery import Delivery, UnreadableRecord
from consumers.runtime import Rejection

_INSERT_DELIVERIES = (
    insert(webhook_deliveries)
    .on_conflict_do_nothing(index_elements=["event_id"])
    .returning(webhook_deliveries.c.event_id)
)

_UPSERT_EVENTS = text(
    """
    INSERT INTO webhook_events AS e
        (event_id, received_at, last_received_at, kind, account_id, check_id, status,
         document, raw_body, body_sha256, signature_form, topic, partition, "offset",
         delivery_count)
    VALUES
        (:event_id, :received_at, :received_at, :kind, :account_id, :check_id, :status,
         CAST(:document AS jsonb), :raw_body, :body_sha256, :signature_form, :topic,
         :partition, :offset, :new_deliveries)
    ON CONFLICT (body_sha256) DO UPDATE SET
        delivery_count = e.delivery_count + EXCLUDED.delivery_count,
        received_at = LEAST(e.received_at, EXCLUDED.received_at),
        last_received_at = GREATEST(e.last_received_at, EXCLUDED.last_received_at)
    """
)


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """The parsed document, the JSON text to store as JSONB, and the raw bytes if not exact."""

    document: Any
    json_text: str
    raw_body: bytes | None


# JSON escapes of the characters JSONB refuses: U+0000 and the surrogates U+D800 to U+DFFF.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def storable(delivery: Delivery) -> StoredDocument:
    """The document of a delivery in a form Postgres accepts; UnreadableRecord if none."""
    if delivery.kind == "test":
        text_body = delivery.body.decode("utf-8", "replace")
        return StoredDocument(text_body, json.dumps(text_body, ensure_ascii=False), None)
    document = delivery.document()
    if not isinstance(document, dict):
        raise UnreadableRecord(
            f"The body is JSON but a {type(document).__name__}, not an object; Conformity "
            "sends one check object per request.",
            reason="body-not-object",
        )
    if _UNSTORABLE_ESCAPE.search(delivery.body):
        cleaned, changed = _escape_unstorable(document)
        if changed:
            text = json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))
            return StoredDocument(cleaned, text, delivery.body)
    # The common case: Postgres parses the very text received.
    return StoredDocument(document, delivery.body.decode("utf-8"), None)


def _escape_unstorable(value: Any) -> tuple[Any, bool]:
    if isinstance(value, str):
        cleaned = "".join(
            f"\\u{ord(char):04x}" if char == "\x00" or "\ud800" <= char <= "\udfff" else char
            for char in value
        )
        return cleaned, cleaned != value
    if isinstance(value, list):
        pairs = [_escape_unstorable(item) for item in value]
        return [item for item, _ in pairs], any(changed for _, changed in pairs)
    if isinstance(value, dict):
        keys = [_escape_unstorable(key) for key in value]
        items = [_escape_unstorable(item) for item in value.values()]
        changed = any(flag for _, flag in keys) or any(flag for _, flag in items)
        return {key: item for (key, _), (item, _) in zip(keys, items, strict=True)}, changed
    return value, False


def _text_field(document: Any, name: str) -> str | None:
    if isinstance(document, dict) and isinstance(document.get(name), str):
        return str(document[name])
    return None


class Archive:
    """Reaction that writes every delivery to `webhook_events` (see the module docstring)."""

    name = "archive"

    async def apply(
        self, connection: AsyncConnection, deliveries: Sequence[Delivery]
    ) -> Sequence[Rejection]:
        """Store the batch; idempotent for redelivered records, in any order."""
        rows, rejections = self._rows(deliveries)
        if not rows:
            return rejections
        inserted = await connection.execute(_INSERT_DELIVERIES, [r["delivery"] for r in rows])
        fresh = {row.event_id for row in inserted}
        metrics.CONSUMER_DUPLICATES.labels(self.name).inc(len(rows) - len(fresh))
        counts = Counter(r["event"]["body_sha256"] for r in rows if r["event_id"] in fresh)
        events = self._first_per_body(rows, counts)
        if events:
            await connection.execute(_UPSERT_EVENTS, events)
        return rejections

    def _rows(
        self, deliveries: Sequence[Delivery]
    ) -> tuple[list[dict[str, Any]], list[Rejection]]:
        rows: list[dict[str, Any]] = []
        rejections: list[Rejection] = []
        seen: set[object] = set()
        for delivery in deliveries:
            if delivery.event_id in seen:
                continue
            seen.add(delivery.event_id)
            try:
                rows.append(self._row(delivery))
            except UnreadableRecord as error:
                rejections.append(Rejection.of(delivery, str(error)))
        return rows, rejections

    def _row(self, delivery: Delivery) -> dict[str, Any]:
        stored = storable(delivery)
        document = stored.document
        where = delivery.position
        place = {"topic": where.topic, "partition": where.partition, "offset": where.offset}
        common = {
            "event_id": delivery.event_id,
            "body_sha256": delivery.body_sha256,
            "received_at": delivery.received_at,
            **place,
        }
        event = common | {
            "kind": delivery.kind,
            "account_id": _text_field(document, "accountId"),
            "check_id": _text_field(document, "id"),
            "status": _text_field(document, "status"),
            "document": stored.json_text,
            "raw_body": stored.raw_body,
            "signature_form": delivery.signature_form,
        }
        return {"event_id": delivery.event_id, "delivery": common, "event": event}

    def _first_per_body(
        self, rows: list[dict[str, Any]], counts: Counter[str]
    ) -> list[dict[str, Any]]:
        # Sorted by body hash so that concurrent transactions lock rows in the same order.
        first: dict[str, dict[str, Any]] = {}
        for row in rows:
            body = row["event"]["body_sha256"]
            if counts[body] and body not in first:
                first[body] = row["event"] | {"new_deliveries": counts[body]}
        return [first[body] for body in sorted(first)]
