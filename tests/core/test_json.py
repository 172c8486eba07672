"""validate_json: one JSON value in UTF-8, nothing after it."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastctx import _core

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(json_values, st.booleans())
def test_accepts_what_json_dumps_writes(value: object, ensure_ascii: bool) -> None:
    assert _core.validate_json(json.dumps(value, ensure_ascii=ensure_ascii).encode()) is None


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b"[]",
        b"null",
        b" \t\r\n0\n",
        b"-0.5e-300",
        b"1e400",
        b"123456789012345678901234567890",
        '"é \\u00e9 \\ud83d\\ude00 😀"'.encode(),
        b'{"a": 1, "a": 2}',
        b"[" * 127 + b"]" * 127,
    ],
)
def test_accepts(data: bytes) -> None:
    assert _core.validate_json(data) is None  # no JsonError


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b"{} {}",
        b"[1] x",
        b"[1,]",
        b"{'a': 1}",
        b'{"a" 1}',
        b"NaN",
        b"Infinity",
        b"01",
        b"1.",
        b".5",
        b"+1",
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark is not JSON
        b'"\xff"',
        b'"\xc3"',
        b'"\xed\xa0\x80"',  # an encoded surrogate
        b'"\\ud800"',  # a lone surrogate escape
        b'"\\udc00"',
        b'"\x01"',
        b'"\\x41"',
        b'"\\u12"',
        b"[" * 128 + b"]" * 128,
        b"[" * 100_000,
    ],
)
def test_rejects(data: bytes) -> None:
    with pytest.raises(_core.JsonError):
        _core.validate_json(data)


def test_error_is_a_value_error_that_says_where() -> None:
    with pytest.raises(ValueError, match="column 5"):
        _core.validate_json(b"[1, }")


def test_large_input() -> None:
    # large inputs are checked with the GIL released
    data = json.dumps([{"i": i, "s": "x" * 50} for i in range(5000)]).encode()
    assert len(data) > 256 * 1024
    assert _core.validate_json(data) is None  # no JsonError
    with pytest.raises(_core.JsonError):
        _core.validate_json(data[:-1])


def test_requires_bytes() -> None:
    with pytest.raises(TypeError):
        _core.validate_json("{}")  # type: ignore[arg-type]
