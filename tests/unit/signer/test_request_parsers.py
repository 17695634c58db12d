"""The request parsers under any input (issue 17, item 5): bytes or JSON in, a value or a
:class:`~signer.errors.RequestError` out, never another exception; and the hostile bodies of
the issue refused with their stable kinds, before parsing where it matters."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import RequestError
from signer.http.kit.body import MAX_JSON_DEPTH, check_depth, parse_json
from signer.http.kit.query import count, instant

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(raw=st.binary(max_size=2048))
def test_any_bytes_give_a_value_or_a_request_error(raw: bytes) -> None:
    with contextlib.suppress(RequestError):
        parse_json(raw)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(value=JSON_VALUES)
def test_json_values_parse_to_themselves_unless_they_hold_nul(value: Any) -> None:
    raw = json.dumps(value).encode()
    if any("\x00" in text for text in _strings(value)):
        with pytest.raises(RequestError) as caught:
            parse_json(raw)
        assert caught.value.slug == "unacceptable-text"
    else:
        assert parse_json(raw) == value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(t for v in value.values() for t in _strings(v))]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []


@settings(max_examples=300, derandomize=True, deadline=None)
@given(depth=st.integers(1, 3 * MAX_JSON_DEPTH), opener=st.sampled_from(["[", '{"a":']))
def test_nesting_is_refused_exactly_past_the_limit_without_parsing(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    if depth <= MAX_JSON_DEPTH:
        check_depth(raw)
        assert parse_json(raw) is not None
    else:
        with pytest.raises(RequestError) as caught:
            check_depth(raw)
        assert caught.value.slug == "json-too-deep"


@settings(max_examples=300, derandomize=True, deadline=None)
@given(text=st.text(max_size=40))
def test_query_parsers_give_a_value_or_none(text: str) -> None:
    number = count(text, 1000)
    assert number is None or 0 <= number <= 1000
    when = instant(text)
    assert when is None or when.tzinfo == UTC


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        pytest.param(b"[" * 1000 + b"]" * 1000, "json-too-deep", id="1000-deep-array"),
        pytest.param(b'{"a":' * 1000 + b"1" + b"}" * 1000, "json-too-deep", id="1000-deep-object"),
        pytest.param(b"[" * 100_000, "malformed-json", id="unclosed-100000-unparsed"),
        pytest.param(b'["[[[[", "]]]]"]', None, id="brackets-in-strings"),
        pytest.param(b'{"profile": "\\ud800"}', "unacceptable-text", id="lone-surrogate"),
        pytest.param(b'{"\\udfff": 1}', "unacceptable-text", id="lone-surrogate-key"),
        pytest.param(b'{"credentialID": "a\\u0000b"}', "unacceptable-text", id="nul"),
        pytest.param(b'{"x": "\\ud83d\\ude00"}', None, id="surrogate-pair-is-fine"),
        pytest.param(b'{"n": NaN}', "malformed-json", id="nan"),
        pytest.param(b'{"n": -Infinity}', "malformed-json", id="infinity"),
        pytest.param(b"9" * 5000, "malformed-json", id="5000-digit-integer"),
        pytest.param(b"\xff\xfe{}", "malformed-json", id="not-utf8"),
        pytest.param(b"[}", "malformed-json", id="brackets-that-do-not-pair"),
    ],
)
def test_hostile_bodies_get_their_stable_kind(raw: bytes, slug: str | None) -> None:
    if slug is None:
        parse_json(raw)
        return
    with pytest.raises(RequestError) as caught:
        parse_json(raw)
    assert caught.value.slug == slug
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1000", 1000),
        ("1001", None),
        ("²", None),
        ("\u0661", None),
        ("-1", None),
        ("", None),
    ],
)
def test_count_takes_ascii_digits_only(text: str, expected: int | None) -> None:
    assert count(text, 1000) == expected


@pytest.mark.parametrize(
    "text",
    ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-01-01T00:00:00", "x"],
)
def test_times_out_of_range_or_without_offset_are_none(text: str) -> None:
    assert instant(text) is None


def test_a_time_is_moved_to_utc() -> None:
    when = instant("2026-01-01T02:00:00+02:00")
    assert when is not None and (when.tzinfo, when.hour) == (UTC, 0)
