"""One Conformity check notification, read from its JSON object into a typed value.

Conformity sends one flat object per check. Five fields are required (`id`, `accountId`,
`ruleId`, `status`, `riskLevel`); every other field may be missing or null, and fields this
module does not know are kept untouched in `Check.document`. A check that cannot be read raises
`UnreadableRecord` with a sentence naming the field, and goes to the dead-letter topic.

The event time of a check is `lastStatusUpdateDate`, else `lastModifiedDate`, else
`createdDate` (epoch milliseconds), else the time the edge received it.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.archive import storable
from consumers.delivery import Delivery, UnreadableRecord

STATUSES = ("SUCCESS", "FAILURE")
RISK_LEVELS = ("LOW", "MEDIUM", "HIGH", "VERY_HIGH", "EXTREME")
EVENT_TIME_FIELDS = ("lastStatusUpdateDate", "lastModifiedDate", "createdDate")
REQUIRED_FIELDS = ("id", "accountId", "ruleId", "status", "riskLevel")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_CLOCK_SKEW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Check:
    """One observation of a check: its status at `event_at`, as Conformity reported it.

    `body_sha256` names the body it was read from; it breaks ties between two different bodies
    that report the same check at the same event time (see `precedence`).
    """

    check_id: str
    account_id: str
    rule_id: str
    status: str
    risk_level: str
    event_at: datetime
    body_sha256: str
    organisation_id: str | None
    rule_title: str | None
    service: str
    region: str
    resource: str
    message: str | None
    categories: tuple[str, ...]
    compliances: tuple[str, ...]
    tags: tuple[str, ...]
    not_scored: bool
    suppressed: bool
    resolution_page_url: str | None
    document: Mapping[str, Any]

    @property
    def counted(self) -> bool:
        """True when the check counts towards the compliance score (scored, not suppressed)."""
        return not (self.not_scored or self.suppressed)

    @property
    def precedence(self) -> tuple[datetime, bool, str]:
        """The order of observations of one check: later wins, then FAILURE, then body hash.

        Any two different observations compare unequal, so the winner never depends on the
        order in which they arrive.
        """
        return (self.event_at, self.status == "FAILURE", self.body_sha256)


def read_check(delivery: Delivery) -> Check:
    """The check a delivery carries; UnreadableRecord when it is not a valid check.

    Strings are read after the archive's cleaning (U+0000 and lone surrogates written as
    ``\\uXXXX``), so every text fits in Postgres and a rebuild from `webhook_events` reads the
    very same values.
    """
    document = json.loads(storable(delivery).json_text)
    return parse_check(
        document, received_at=delivery.received_at, body_sha256=delivery.body_sha256
    )


def parse_check(document: Any, *, received_at: datetime, body_sha256: str) -> Check:
    """Validate one check object; raise UnreadableRecord naming the first bad field."""
    if not isinstance(document, dict):
        raise _bad(f"The check is a JSON {type(document).__name__}, not an object.")
    for name in REQUIRED_FIELDS:
        if _optional_text(document, name) in (None, ""):
            raise UnreadableRecord(
                f"The check has no `{name}`; every check needs {', '.join(REQUIRED_FIELDS)}.",
                reason="check-missing-field",
            )
    status = _one_of(document, "status", STATUSES)
    risk_level = _one_of(document, "riskLevel", RISK_LEVELS)
    parts = _id_parts(document)
    return Check(
        check_id=document["id"],
        account_id=document["accountId"],
        rule_id=document["ruleId"],
        status=status,
        risk_level=risk_level,
        event_at=event_time(document, received_at),
        body_sha256=body_sha256,
        organisation_id=_optional_text(document, "organisationId"),
        rule_title=_optional_text(document, "ruleTitle"),
        service=_optional_text(document, "service") or parts[0],
        region=_optional_text(document, "region") or parts[1],
        resource=_optional_text(document, "resource") or parts[2],
        message=_optional_text(document, "message"),
        categories=_texts(document, "categories"),
        compliances=_texts(document, "compliances"),
        tags=_texts(document, "tags"),
        not_scored=_flag(document, "notScored"),
        suppressed=_flag(document, "suppressed"),
        resolution_page_url=_resolution_page(document),
        document=document,
    )


def event_time(document: Mapping[str, Any], received_at: datetime) -> datetime:
    """The first event-time field present (epoch milliseconds), else `received_at`, in UTC.

    A time before 2000 or more than a day after the request arrived is refused: a check dated
    in the future would hide every later observation of it until that date.
    """
    for name in EVENT_TIME_FIELDS:
        value = document.get(name)
        if value is not None:
            return _plausible(name, _millis(name, value), received_at)
    return received_at.astimezone(UTC)


def _bad(message: str) -> UnreadableRecord:
    return UnreadableRecord(message, reason="check-bad-field")


def _optional_text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _bad(f"The check's `{name}` is a JSON {type(value).__name__}, not a string.")


def _one_of(document: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = str(document[name])
    if value not in allowed:
        raise _bad(f"The check's `{name}` is {value!r}, which is not one of {', '.join(allowed)}.")
    return value


def _id_parts(document: Mapping[str, Any]) -> tuple[str, str, str]:
    """Service, region and resource from the id, after checking its account and rule parts."""
    check_id, account, rule = document["id"], document["accountId"], document["ruleId"]
    parts = check_id.split(":", 5)
    if len(parts) != 6 or parts[:3] != ["ccc", account, rule]:
        raise _bad(
            f"The check's `id` {check_id!r} is not of the form "
            "ccc:<accountId>:<ruleId>:<service>:<region>:<resource> for its accountId and ruleId."
        )
    return parts[3], parts[4], parts[5]


def _texts(document: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """A list of strings, without repeats, in the order given; missing or null is empty."""
    value = document.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad(f"The check's `{name}` is not a list of strings.")
    return tuple(dict.fromkeys(value))


def _flag(document: Mapping[str, Any], name: str) -> bool:
    value = document.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"The check's `{name}` is a JSON {type(value).__name__}, not true or false.")
    return value


def _millis(name: str, value: Any) -> datetime:
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise _bad(f"The check's `{name}` is {value!r}, not a time in epoch milliseconds.")
    try:
        return _EPOCH + timedelta(milliseconds=int(value))
    except OverflowError as error:
        raise _bad(
            f"The check's `{name}` is {value!r}, which is out of range for epoch milliseconds."
        ) from error


def _plausible(name: str, moment: datetime, received_at: datetime) -> datetime:
    if _EARLIEST <= moment <= received_at + _CLOCK_SKEW:
        return moment
    raise _bad(
        f"The check's `{name}` is {moment.isoformat()}, before 2000 or more than a day after "
        "the request arrived; check the sender's clock."
    )


def _resolution_page(document: Mapping[str, Any]) -> str | None:
    """Older senders spell the field `resolutionPageURL`, newer ones `resolutionPageUrl`."""
    return _optional_text(document, "resolutionPageUrl") or _optional_text(
        document, "resolutionPageURL"
    )
