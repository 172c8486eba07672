"""Patches applied as writes and logs apply them: appends spliced (and, for large documents,
kept apart in a Document), everything else through the parsed document; the same bytes
whichever way a node gets there."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastctx import _core
from fastctx._core import PatchError

BIG = _core.ROPE_MIN_BYTES


def append(pointer: str, *items: Any) -> bytes:
    operations = [{"op": "add", "path": f"{pointer}/-", "value": item} for item in items]
    return json.dumps(operations).encode()


def conversation(size: int, spaced: bool = False) -> bytes:
    messages = []
    while len(json.dumps(messages)) < size:
        messages.append({"role": "user", "n": len(messages), "text": "x" * 200})
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps({"title": "t", "messages": messages, "z": 1}, separators=separators).encode()


def as_bytes(document: bytes | _core.Document) -> bytes:
    return document if isinstance(document, bytes) else document.bytes()


def test_an_append_is_spliced_into_the_bytes() -> None:
    doc = b'{ "messages" : [ {"n": 0} ] , "z": 1 }'
    out = _core.patched(doc, append("/messages", {"n": 1}, {"n": 2}))
    assert out == b'{ "messages" : [ {"n": 0} ,{"n":1},{"n":2}] , "z": 1 }'
    assert _core.patched(b'{"m": [ ]}', append("/m", 1)) == b'{"m": [ 1]}'
    assert _core.patched(b"[]", append("", [1, 2])) == b"[[1,2]]"
    # a compact document comes out as the general way writes it
    compact = b'{"messages":[{"n":0}],"z":1}'
    assert _core.patched(compact, append("/messages", {"n": 1})) == _core.json_patch(
        compact, append("/messages", {"n": 1})
    )


def test_other_patches_take_the_general_way() -> None:
    doc = b'{ "a" : [1] }'
    assert _core.patched(doc, b'[{"op":"add","path":"/a/0","value":0}]') == b'{"a":[0,1]}'
    # "-" of an object is a member name
    assert _core.patched(b'{"o": {}}', append("/o", 1)) == b'{"o":{"-":1}}'
    with pytest.raises(PatchError):
        _core.patched(doc, append("/missing", 1))
    with pytest.raises(PatchError):
        _core.patched(doc, append("/a/0", 1))  # a number has no elements
    mixed = b'[{"op":"add","path":"/a/-","value":2},{"op":"test","path":"/a/0","value":1}]'
    assert _core.patched(doc, mixed) == b'{"a":[1,2]}'


def test_a_large_document_keeps_its_appends_apart() -> None:
    doc = conversation(BIG + 1000, spaced=True)
    first = _core.patched(doc, append("/messages", {"n": "a"}))
    assert isinstance(first, _core.Document)
    second = _core.patched(first, append("/messages", {"n": "b"}, {"n": "c"}))
    assert isinstance(second, _core.Document)
    expected = json.loads(doc)
    expected["messages"] += [{"n": "a"}, {"n": "b"}, {"n": "c"}]
    assert json.loads(second.bytes()) == expected
    assert len(second) == len(second.bytes())
    assert second.bytes() is second.bytes()  # made once
    assert json.loads(first.bytes())["messages"][-1] == {"n": "a"}  # immutable
    # reads of the array, inside it, beside it and above it agree with the bytes
    whole = second.bytes()
    for pointer, bounds in [
        ("/messages", (-20, None)),
        ("/messages", (-2, None)),
        ("/messages", (0, 3)),
        ("/messages", None),
        ("/messages/0", None),
        ("/messages/1/text", None),
        (f"/messages/{len(expected['messages']) - 1}", None),
        (f"/messages/{len(expected['messages']) - 2}/n", None),
        ("/title", None),
        ("/z", None),
        ("", None),
    ]:
        assert _core.select(second, pointer, bounds) == _core.select(whole, pointer, bounds), (
            pointer,
            bounds,
        )
    with pytest.raises(_core.PathNotFound):
        _core.select(second, f"/messages/{len(expected['messages'])}")
    with pytest.raises(_core.PathNotFound):
        _core.select(second, f"/messages/{len(expected['messages']) - 1}/nothing")
    # another patch makes the bytes and goes the general way
    merged = _core.patched(second, b'[{"op":"replace","path":"/z","value":2}]')
    assert isinstance(merged, bytes)
    assert json.loads(merged)["z"] == 2


def test_a_log_makes_the_bytes_its_writes_made() -> None:
    doc = conversation(BIG * 2, spaced=True)
    patches = [
        append("/messages", {"n": 1}),
        append("/messages", {"n": 2}, {"n": 3}),
        b'[{"op":"replace","path":"/title","value":"u"}]',
        append("/messages", {"n": 4}),
        b'[{"op":"add","path":"/list","value":[]}]',
        append("/list", "x"),
        append("/messages", {"n": 5}),
    ]
    written: bytes | _core.Document = doc
    for patch in patches:
        written = _core.patched(written, patch)
    assert as_bytes(_core.apply_patches(doc, patches)) == as_bytes(written)
    # from any point on
    for cut in range(len(patches)):
        start: bytes | _core.Document = doc
        for patch in patches[:cut]:
            start = _core.patched(start, patch)
        assert as_bytes(_core.apply_patches(start, patches[cut:])) == as_bytes(written)
    assert _core.apply_patches(doc, []) == doc
    with pytest.raises(PatchError, match=r"^patch 1: "):
        _core.apply_patches(doc, [patches[0], append("/nothing", 1)])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.lists(json_values, min_size=1, max_size=3)),
            st.tuples(st.just("set"), json_values),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_any_run_of_patches_makes_the_same_bytes(steps: list[Any], large: bool) -> None:
    doc = conversation(2 * BIG if large else 300)
    patches = [
        append("/messages", *arg)
        if kind == "append"
        else json.dumps([{"op": "add", "path": "/v", "value": arg}]).encode()
        for kind, arg in steps
    ]
    one_by_one: bytes | _core.Document = doc
    expected = json.loads(doc)
    for (kind, arg), patch in zip(steps, patches, strict=True):
        one_by_one = _core.patched(one_by_one, patch)
        if kind == "append":
            expected["messages"] += arg
        else:
            expected["v"] = arg
    assert json.loads(as_bytes(one_by_one)) == expected
    assert as_bytes(_core.apply_patches(doc, patches)) == as_bytes(one_by_one)


def test_a_cache_holds_documents_by_their_length() -> None:
    cache = _core.Cache(10 * BIG)
    document = _core.patched(conversation(2 * BIG), append("/messages", 1))
    assert isinstance(document, _core.Document)
    cache.put("k", document, 2, 0)
    entry = cache.get("k")
    assert entry is not None
    assert entry[0] is document
    assert cache.bytes_used >= len(document)
    with pytest.raises(TypeError):
        cache.put("bad", "not bytes", 1, 0)  # type: ignore[arg-type]
