"""Tests for ingest.signature and ingest.jsstringify."""

import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from ingest.jsstringify import js_stringify
from ingest.signature import SIGNATURE_HEADERS, SignatureForm, pick_signature, sign, verify
from tests.fixtures import fixtures_dir

SIGNATURES: dict[str, Any] = json.loads(
    (fixtures_dir() / "signatures.json").read_text(encoding="utf-8")
)
TOKEN: str = SIGNATURES["token"]
CASES: list[dict[str, str]] = SIGNATURES["cases"]
TEST_MESSAGE = (fixtures_dir() / "test-message.txt").read_bytes()

# The form each accepted fixture case must match. "numbers" is sent as 1e21, which
# JSON.stringify writes as 1e+21, so only the re-serialised form verifies.
ACCEPTED_FORMS = {
    "compact-raw": SignatureForm.RAW,
    "uppercase-hex": SignatureForm.RAW,
    "unicode-raw": SignatureForm.RAW,
    "pretty-printed-body": SignatureForm.JS_STRINGIFY,
    "unicode-escaped-body": SignatureForm.JS_STRINGIFY,
    "numbers": SignatureForm.JS_STRINGIFY,
}

BODY = CASES[0]["body"].encode("utf-8")
GOOD = sign(BODY, TOKEN)

# Unicode digits that int() and some hex parsers accept but a signature must not hold.
FULLWIDTH_DIGITS = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


def test_every_accepted_fixture_case_has_an_expected_form() -> None:
    accepted = {case["name"] for case in CASES if case["expect"] == "accept"}
    assert accepted == set(ACCEPTED_FORMS)


@pytest.mark.parametrize("header", SIGNATURES["headers"])
@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_fixture_case(case: dict[str, str], header: str) -> None:
    signature = pick_signature({header: case["signature"], "Content-Type": "application/json"})

    form = verify(case["body"].encode("utf-8"), signature, [TOKEN])

    assert form is ACCEPTED_FORMS.get(case["name"])


def test_sign_gives_the_fixture_signature() -> None:
    assert CASES[0]["signature"] == GOOD


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param(GOOD[:-1] + "é", id="non-ascii"),
        pytest.param(GOOD.translate(FULLWIDTH_DIGITS), id="fullwidth-digits"),
        pytest.param(GOOD + "0", id="65-hex-digits"),
        pytest.param(" " + GOOD, id="leading-space"),
        pytest.param("sha256=" + GOOD, id="prefixed"),
    ],
)
def test_malformed_signature_is_rejected(signature: str | None) -> None:
    assert verify(BODY, signature, [TOKEN]) is None


def test_body_that_is_not_utf8_is_checked_raw_only() -> None:
    body = b"\xff\xfe{}"

    assert verify(body, sign(body, TOKEN), [TOKEN]) is SignatureForm.RAW
    assert verify(body, sign(b"{}", TOKEN), [TOKEN]) is None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constant_is_not_parsed(constant: str) -> None:
    body = constant.encode("ascii")

    # JSON.stringify(NaN) is "null"; accepting it would mean json.loads let NaN through.
    assert verify(body, sign(b"null", TOKEN), [TOKEN]) is None
    assert verify(body, sign(body, TOKEN), [TOKEN]) is SignatureForm.RAW


def test_rotated_tokens_are_all_accepted() -> None:
    assert verify(BODY, GOOD, ["old-token", TOKEN]) is SignatureForm.RAW
    assert verify(BODY, GOOD, [TOKEN, "new-token"]) is SignatureForm.RAW


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param([], id="none"),
        pytest.param(["other-token"], id="wrong"),
        pytest.param([""], id="empty-token"),
        pytest.param(["\ud800"], id="unencodable-token"),
    ],
)
def test_without_the_right_token_nothing_verifies(tokens: list[str]) -> None:
    signature = sign(BODY, tokens[0]) if tokens == [""] else GOOD

    assert verify(BODY, signature, tokens) is None


def test_test_message_signed_raw_is_accepted() -> None:
    assert TEST_MESSAGE == b"Test Message from Cloud Conformity"

    assert verify(TEST_MESSAGE, sign(TEST_MESSAGE, TOKEN), [TOKEN]) is SignatureForm.RAW


def test_test_message_signed_as_json_string_is_accepted() -> None:
    quoted = b'"Test Message from Cloud Conformity"'

    assert verify(TEST_MESSAGE, sign(quoted, TOKEN), [TOKEN]) is SignatureForm.JS_STRINGIFY


def test_deeply_nested_body_does_not_raise() -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    assert verify(body, sign(b"[]", TOKEN), [TOKEN]) is None


def test_pick_signature_prefers_the_trendmicro_header() -> None:
    headers = {"X-Conformity-Signature": "older", "X-TrendMicro-Signature": "newer"}

    assert pick_signature(headers) == "newer"


def test_pick_signature_reads_starlette_headers() -> None:
    headers = Headers(raw=[(b"x-conformity-signature", GOOD.encode("ascii"))])

    assert pick_signature(headers) == GOOD


def test_pick_signature_without_a_signature_header() -> None:
    assert pick_signature({"Content-Type": "application/json"}) is None
    assert SIGNATURE_HEADERS == ("x-trendmicro-signature", "x-conformity-signature")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1.5, "1.5", id="float-fraction"),
        pytest.param(1.0, "1", id="float-whole"),
        pytest.param(-0.0, "0", id="negative-zero"),
        pytest.param(-1.5, "-1.5", id="negative"),
        pytest.param(1e21, "1e+21", id="float-1e21"),
        pytest.param(1e20, "100000000000000000000", id="float-1e20"),
        pytest.param(1e-7, "1e-7", id="float-1e-7"),
        pytest.param(0.000001, "0.000001", id="float-1e-6"),
        pytest.param(0.0000012345, "0.0000012345", id="float-small-digits"),
        pytest.param(1.5e-7, "1.5e-7", id="float-exponent-digits"),
        pytest.param(0.1 + 0.2, "0.30000000000000004", id="float-shortest-digits"),
        pytest.param(123.456, "123.456", id="float-point-inside"),
        pytest.param(5e-324, "5e-324", id="float-smallest"),
        pytest.param(1.7976931348623157e308, "1.7976931348623157e+308", id="float-largest"),
        pytest.param(float("inf"), "null", id="float-infinite"),
        pytest.param(0, "0", id="int-zero"),
        pytest.param(-42, "-42", id="int-negative"),
        pytest.param(2**53, "9007199254740992", id="int-2-53"),
        pytest.param(2**53 + 1, "9007199254740992", id="int-beyond-double"),
        pytest.param(10**21, "1e+21", id="int-1e21"),
        # The double nearest this is 123456789012345685803008; ...69e+23 is the nearer of the two
        # shortest spellings, and it is what V8 writes.
        pytest.param(123456789012345678901234, "1.2345678901234569e+23", id="int-huge"),
        pytest.param(10**400, "null", id="int-beyond-range"),
        pytest.param(True, "true", id="true"),
        pytest.param(False, "false", id="false"),
        pytest.param(None, "null", id="null"),
        pytest.param("", '""', id="empty-string"),
        pytest.param('"\\/', '"\\"\\\\/"', id="quote-backslash-slash"),
        pytest.param("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"', id="short-escapes"),
        pytest.param("\x00\x1f\x7f", '"\\u0000\\u001f\x7f"', id="control-chars"),
        pytest.param("é 東京 🔒", '"é 東京 🔒"', id="non-ascii-raw"),
        pytest.param("a\u2028b\u2029c", '"a\u2028b\u2029c"', id="line-separators-raw"),
        pytest.param("\ud800x\udfff", '"\\ud800x\\udfff"', id="lone-surrogates"),
        pytest.param("\ud83d\udd12", '"🔒"', id="surrogate-pair"),
        pytest.param([], "[]", id="empty-list"),
        pytest.param({}, "{}", id="empty-object"),
        pytest.param({"b": 1, "a": [1, {"c": None}]}, '{"b":1,"a":[1,{"c":null}]}', id="nested"),
        pytest.param(
            {"b": 1, "10": 2, "2": 3, "01": 4, "4294967295": 5, "4294967294": 6},
            '{"2":3,"10":2,"4294967294":6,"b":1,"01":4,"4294967295":5}',
            id="array-index-keys-first",
        ),
    ],
)
def test_js_stringify(value: object, expected: str) -> None:
    assert js_stringify(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('"\\ud800"', '"\\ud800"', id="lone-surrogate"),
        pytest.param('"\\ud83d\\udd12"', '"🔒"', id="escaped-pair"),
        pytest.param('"\\u2028"', '"\u2028"', id="escaped-line-separator"),
        pytest.param('"\\/"', '"/"', id="escaped-slash"),
        pytest.param('{"a":1,"a":2,"b":3}', '{"a":2,"b":3}', id="duplicate-key"),
        pytest.param("-0", "0", id="negative-zero"),
        pytest.param("1E400", "null", id="overflowing-float"),
        pytest.param("[1.0, 2.50, 1e2]", "[1,2.5,100]", id="float-literals"),
    ],
)
def test_js_stringify_of_parsed_json(text: str, expected: str) -> None:
    assert js_stringify(json.loads(text)) == expected


def test_js_stringify_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        js_stringify({1, 2})
