"""select: the value a JSON Pointer names, cut out of JSON bytes, against a Python reference."""

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastctx import _core
from fastctx._core import JsonError, PathNotFound, SelectError

keys = st.sampled_from(["a", "b", "ü", "a/b", "m~n", "~1", "0", "01", "-", "", " "]) | st.text(
    max_size=4
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)
# Mostly containers, which pointers can go into.
documents = st.lists(json_values, max_size=6) | st.dictionaries(keys, json_values, max_size=6)
documents |= json_values
# Bounds as Python slices take them: small ones around the lengths drawn, and far-off ones.
bounds = st.none() | st.integers(-8, 8) | st.sampled_from([-(2**70), 2**70, -(2**63), 2**63 - 1])
ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def spaced(value: Any) -> bytes:
    """The same value with whitespace wherever JSON allows it, escapes for non-ASCII."""
    return b" \n" + json.dumps(value, indent="\t", separators=(" , ", " :\r\n ")).encode() + b" "


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def reference(document: bytes, pointer: str) -> Any:
    """RFC 6901 on the parsed document: json.loads, then a walk; LookupError for nothing."""
    value = json.loads(document)
    if pointer == "":
        return value
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value[token]  # KeyError is a LookupError
        elif isinstance(value, list):
            if not ARRAY_INDEX.fullmatch(token) or int(token) >= len(value):
                raise LookupError(token)
            value = value[int(token)]
        else:
            raise LookupError(token)
    return value


@st.composite
def pointers_into(draw: st.DrawFn, value: Any) -> str:
    """A pointer that mostly follows the value's own members and elements, and sometimes
    strays: a key it lacks, an index past its end, `-`, `01`, a step into a scalar."""
    tokens: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        if isinstance(value, dict) and value:
            key = draw(st.sampled_from(sorted(value)))
            tokens.append(key)
            value = value[key]
        elif isinstance(value, list) and value:
            index = draw(st.integers(0, len(value) - 1))
            tokens.append(str(index))
            value = value[index]
        else:
            break
    if draw(st.integers(0, 3)) == 0:
        tokens.append(draw(keys | st.integers(0, 9).map(str)))
    return "".join("/" + escape(token) for token in tokens)


@settings(max_examples=300)
@given(st.data(), documents, st.booleans())
def test_select_matches_the_reference(data: st.DataObject, value: Any, pretty: bool) -> None:
    document = spaced(value) if pretty else compact(value)
    pointer = data.draw(pointers_into(value))
    try:
        expected = reference(document, pointer)
    except LookupError:
        with pytest.raises(PathNotFound, match=f"^nothing at {re.escape(pointer)}: "):
            _core.select(document, pointer)
        return
    result = _core.select(document, pointer)
    assert json.loads(result) == expected
    assert result in document  # cut out as written, not rewritten
    if not pretty:
        assert result == compact(expected)


@settings(max_examples=300)
@given(st.data(), documents, st.booleans(), bounds, bounds)
def test_slices_match_python_slicing(
    data: st.DataObject, value: Any, pretty: bool, start: int | None, end: int | None
) -> None:
    document = spaced(value) if pretty else compact(value)
    pointer = data.draw(pointers_into(value))
    try:
        target = reference(document, pointer)
    except LookupError:
        with pytest.raises(PathNotFound):
            _core.select(document, pointer, (start, end))
        return
    if not isinstance(target, list):
        with pytest.raises(SelectError, match=r"^a slice needs an array"):
            _core.select(document, pointer, (start, end))
        return
    result = _core.select(document, pointer, (start, end))
    assert json.loads(result) == target[start:end]
    if not pretty:
        assert result == compact(target[start:end])


def test_escapes_and_unicode_in_keys() -> None:
    document = json.dumps(
        {"a/b": 1, "m~n": 2, "~1": 3, "é": 4, "😀": {"x y": [5]}, "": 6}, ensure_ascii=True
    ).encode()
    assert _core.select(document, "/a~1b") == b"1"
    assert _core.select(document, "/m~0n") == b"2"
    assert _core.select(document, "/~01") == b"3"
    assert _core.select(document, "/é") == b"4"
    assert _core.select(document, "/😀/x y/0") == b"5"
    assert _core.select(document, "/") == b"6"
    with pytest.raises(PathNotFound):
        _core.select(document, "/a/b")


def test_whitespace_everywhere_and_empty_arrays() -> None:
    document = b' \r\n{ "a" :\t[ ] , "b" : [ 1 ,\n 2 ] } \n'
    assert _core.select(document, "") == document.strip()
    assert _core.select(document, "/a") == b"[ ]"
    assert _core.select(document, "/a", (None, None)) == b"[]"
    assert _core.select(document, "/a", (-20, None)) == b"[]"
    assert _core.select(document, "/b") == b"[ 1 ,\n 2 ]"
    assert _core.select(document, "/b", (None, None)) == b"[1,2]"
    assert _core.select(document, "/b/1") == b"2"


def test_negative_and_open_slices() -> None:
    five = b'[0, "one", {"two": 2}, [3], 4.0]'
    assert _core.select(five, "", (-20, None)) == b'[0,"one",{"two": 2},[3],4.0]'
    assert _core.select(five, "", (-2, None)) == b"[[3],4.0]"
    assert _core.select(five, "", (None, -3)) == b'[0,"one"]'
    assert _core.select(five, "", (3, 1)) == b"[]"
    assert _core.select(five, "", (10**40, None)) == b"[]"
    assert _core.select(five, "", (-(10**40), 1)) == b"[0]"
    assert _core.select(five, "", (True, None)) == b'["one",{"two": 2},[3],4.0]'  # bool is int


def test_repeated_keys_name_their_last_value_as_json_loads_does() -> None:
    document = b'{"a": {"x": 1}, "b": 0, "a": {"y": [2, 3]}}'
    assert json.loads(document)["a"] == {"y": [2, 3]}
    assert _core.select(document, "/a") == b'{"y": [2, 3]}'
    assert _core.select(document, "/a/y", (-1, None)) == b"[3]"
    with pytest.raises(PathNotFound):
        _core.select(document, "/a/x")


def test_array_tokens_follow_rfc_6901() -> None:
    document = b"[10, 11]"
    assert _core.select(document, "/1") == b"11"
    for token in ["2", "-", "01", "-1", "+1", "1.0", "", " 1", "99999999999999999999"]:
        with pytest.raises(PathNotFound):
            _core.select(document, f"/{token}")


@pytest.mark.parametrize("pointer", ["a", "#/a", "/a~", "/a~2", "/~x/b"])
def test_malformed_pointers(pointer: str) -> None:
    with pytest.raises(SelectError, match=r"JSON Pointer|escape"):
        _core.select(b'{"a": 1}', pointer)


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"{",
        b'{"a": 1,}',
        b'{"a": 1} {}',
        b'{"b": [1,], "a": 1}',
        b'{"a": 1, "b": "\\ud800"}',
        b'{"a": "\xff"}',
        b"[" * 200 + b"]" * 200,
    ],
)
def test_the_whole_document_must_be_json(document: bytes) -> None:
    with pytest.raises(JsonError):
        _core.select(document, "/a")
    with pytest.raises(JsonError):
        _core.select(document, "", (None, None))


@given(json_values, st.integers(0, 10_000))
def test_a_truncated_document_is_refused_as_validate_json_refuses_it(value: Any, cut: int) -> None:
    document = compact(value)
    document = document[: cut % (len(document) + 1)]
    try:
        _core.validate_json(document)
    except JsonError:
        with pytest.raises(JsonError):
            _core.select(document, "")
    else:
        assert _core.select(document, "") == document


def test_errors_are_what_python_catches() -> None:
    assert issubclass(PathNotFound, LookupError)
    assert issubclass(SelectError, ValueError)
    assert not issubclass(SelectError, JsonError)
    with pytest.raises(TypeError):
        _core.select(b"[1]", "", (1.5, None))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.select("[1]", "")  # type: ignore[arg-type]


def test_large_documents() -> None:
    # walked with the GIL released
    items = [{"i": i, "s": "x" * 50} for i in range(5000)]
    document = json.dumps({"log": items, "tail": True}).encode()
    assert len(document) > 256 * 1024
    assert json.loads(_core.select(document, "/log", (-20, None))) == items[-20:]
    assert _core.select(document, "/tail") == b"true"
    with pytest.raises(JsonError):
        _core.select(document[:-1], "/tail")
