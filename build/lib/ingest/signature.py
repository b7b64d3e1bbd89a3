"""Verification of the HMAC-SHA256 signature Conformity puts on each webhook delivery.

Conformity signs ``JSON.stringify(payload)`` with the channel token's UTF-8 bytes and sends the
lowercase hex digest in ``X-TrendMicro-Signature`` (older senders: ``X-Conformity-Signature``).
Nothing in this module logs, returns or puts into an error message a token or a signature.
"""

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence

from ingest.jsstringify import js_stringify

__all__ = ["SIGNATURE_HEADERS", "SignatureForm", "pick_signature", "sign", "verify"]

SIGNATURE_HEADERS: tuple[str, ...] = ("x-trendmicro-signature", "x-conformity-signature")

_HEX_DIGEST = re.compile("[0-9a-fA-F]{64}")


# Not StrEnum: callers rely on the (str, Enum) base, and StrEnum changes what str() gives.
class SignatureForm(str, enum.Enum):  # noqa: UP042
    """Which text a matching signature was computed over."""

    RAW = "raw"
    """The exact body bytes received."""

    JS_STRINGIFY = "js-stringify"
    """``JSON.stringify`` of the parsed body (or of the body text, for a body that is not JSON)."""

    UNSIGNED = "unsigned"
    """Accepted without a signature because an operator allowed it; ``verify`` never returns it."""


def sign(body: bytes, token: str) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``body`` keyed with ``token``'s UTF-8 bytes.

    Raises ``UnicodeEncodeError`` if ``token`` holds a lone surrogate.
    """
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, tokens: Sequence[str]) -> SignatureForm | None:
    """Return the form of ``body`` that ``signature`` was made over with one of ``tokens``.

    The raw bytes are checked first; only if they fail, the ``JSON.stringify`` text of the
    parsed body is checked (for UTF-8 text that is not JSON, such as Conformity's channel test
    message, the ``JSON.stringify`` text of the body as a string). Returns ``None`` when
    nothing matches. Every token is tried, so several may be accepted at once while one is
    rotated; empty tokens and tokens that cannot be encoded are never accepted. Hex digits
    compare case-insensitively and in constant time. Never raises, whatever the input.
    """
    wanted = _normalise(signature)
    keys = _keys(tokens)
    if wanted is None or not keys:
        return None

    if _any_key_matches(body, wanted, keys):
        return SignatureForm.RAW

    stringified = _js_stringified(body)
    if stringified is not None and _any_key_matches(stringified, wanted, keys):
        return SignatureForm.JS_STRINGIFY

    return None


def pick_signature(headers: Mapping[str, str]) -> str | None:
    """Return the value of the first of ``SIGNATURE_HEADERS`` present in ``headers``.

    Header names match case-insensitively whether or not ``headers`` does so itself; when a
    name occurs more than once, its first value wins. An empty value counts as present.
    """
    for name in SIGNATURE_HEADERS:
        for key, value in headers.items():
            if key.lower() == name:
                return value
    return None


def _normalise(signature: object) -> str | None:
    """Return the signature in lowercase, or ``None`` unless it is exactly 64 hex digits."""
    if not isinstance(signature, str) or not _HEX_DIGEST.fullmatch(signature):
        return None
    return signature.lower()


def _keys(tokens: Sequence[str]) -> list[bytes]:
    keys = []
    for token in tokens:
        try:
            key = token.encode("utf-8")
        except (AttributeError, UnicodeEncodeError):
            continue
        # An empty key would accept a signature anyone can compute.
        if key:
            keys.append(key)
    return keys


def _any_key_matches(message: bytes, wanted: str, keys: list[bytes]) -> bool:
    matched = False
    for key in keys:
        expected = hmac.new(key, message, hashlib.sha256).hexdigest()
        # No early exit: the time taken should not tell which token, if any, matched.
        matched |= hmac.compare_digest(expected, wanted)
    return matched


def _js_stringified(body: bytes) -> bytes | None:
    """Return the UTF-8 of what JavaScript would have signed, or ``None`` if not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        value: object = _parse_json(text)
    except (ValueError, RecursionError):
        # We do not know whether the plain-text channel test message is signed raw or as
        # JSON.stringify of the string, so the string form is accepted as well.
        value = text
    try:
        return js_stringify(value).encode("utf-8")
    except RecursionError:
        return None


def _parse_json(text: str) -> object:
    """Parse strictly as JavaScript's JSON.parse would, refusing NaN and Infinity."""
    return json.loads(text, parse_constant=_reject_constant)


def _reject_constant(name: str) -> object:
    raise ValueError(f"The body holds {name}, which is not JSON; send finite numbers only.")
