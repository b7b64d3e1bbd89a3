"""JavaScript's ``JSON.stringify``, reproduced for values that came out of ``json.loads``.

Conformity signs ``JSON.stringify(payload)``, not the bytes it sends, so a body that was
re-serialised on the way (pretty-printed, ``\\u``-escaped) can only be verified by rebuilding
the exact text JavaScript would have produced from the same parsed value.
"""

import math
import re

__all__ = ["js_stringify"]

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}

# A surrogate pair is one code point to JavaScript and is written raw; only a lone surrogate,
# which cannot be encoded as UTF-8, is escaped (the well-formed JSON.stringify of ES2019).
_NEEDS_ESCAPE = re.compile('[\ud800-\udbff][\udc00-\udfff]|["\\\\\x00-\x1f\ud800-\udfff]')

_ARRAY_INDEX = re.compile("0|[1-9][0-9]*")
_MAX_ARRAY_INDEX = 2**32 - 2

# Above this, a JSON integer no longer survives JavaScript's conversion to a double unchanged.
_MAX_SAFE_INTEGER = 2**53


def js_stringify(value: object) -> str:
    """Return the text ``JSON.stringify`` would produce for ``value``.

    ``value`` is anything ``json.loads`` returns: ``dict`` with ``str`` keys, ``list``, ``str``,
    ``int``, ``float``, ``bool`` or ``None``. The output is compact, keeps non-ASCII text raw,
    and formats numbers the way JavaScript does (``1e+21``, ``1e-7``, ``1`` for ``1.0``).
    Numbers JavaScript cannot hold (infinite, NaN, integers beyond the double range) become
    ``null``, as they would in JavaScript. Object keys come out in JavaScript's property
    order: array-index keys (``"0"``, ``"17"``) first in ascending order, then the rest in
    insertion order. Raises ``TypeError`` for any other type.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _format_int(value)
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list):
        return "[" + ",".join(js_stringify(item) for item in value) + "]"
    if isinstance(value, dict):
        return _format_object(value)
    raise TypeError(f"js_stringify cannot serialise a {type(value).__name__}; pass JSON values.")


def _format_object(value: dict[object, object]) -> str:
    members = []
    for key in _js_key_order(value):
        if not isinstance(key, str):
            raise TypeError(f"js_stringify needs str object keys, not {type(key).__name__}.")
        members.append(_quote(key) + ":" + js_stringify(value[key]))
    return "{" + ",".join(members) + "}"


def _js_key_order(value: dict[object, object]) -> list[object]:
    """Order keys as JavaScript enumerates an object's own properties."""
    indices = sorted((k for k in value if _is_array_index(k)), key=lambda k: int(str(k)))
    others = [k for k in value if not _is_array_index(k)]
    return [*indices, *others]


def _is_array_index(key: object) -> bool:
    if not isinstance(key, str) or not _ARRAY_INDEX.fullmatch(key):
        return False
    return int(key) <= _MAX_ARRAY_INDEX


def _quote(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def _escape(match: re.Match[str]) -> str:
    found = match.group()
    if len(found) == 2:
        return found.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    return _SHORT_ESCAPES.get(found) or f"\\u{ord(found):04x}"


def _format_int(value: int) -> str:
    if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
        return str(value)
    try:
        # Python rounds an int to the nearest double exactly as JavaScript parses the literal.
        return _format_float(float(value))
    except OverflowError:
        return "null"


def _format_float(value: float) -> str:
    """Format like ECMAScript Number::toString (radix 10), from repr's shortest digits."""
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    digits, point = _shortest_digits(abs(value))
    sign = "-" if value < 0 else ""
    return sign + _lay_out(digits, point)


def _shortest_digits(value: float) -> tuple[str, int]:
    """Split a positive finite float into digits ``s`` and ``n`` with value = 0.s * 10**n.

    ``s`` has no leading or trailing zeros; repr already gives the shortest digits that
    round-trip, which is what ECMAScript asks for.
    """
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    raw = whole + fraction
    digits = raw.lstrip("0")
    point = len(whole) + int(exponent or "0") - (len(raw) - len(digits))
    return digits.rstrip("0"), point


def _lay_out(digits: str, point: int) -> str:
    count = len(digits)
    if count <= point <= 21:
        return digits + "0" * (point - count)
    if 0 < point <= 21:
        return digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    exponent = point - 1
    exponent_text = f"e+{exponent}" if exponent >= 0 else f"e-{-exponent}"
    if count == 1:
        return digits + exponent_text
    return digits[0] + "." + digits[1:] + exponent_text
