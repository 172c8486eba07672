"""merge_patch (RFC 7386) and json_patch (RFC 6902) over JSON bytes."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastctx import _core
from fastctx._core import JsonError, PatchError, PatchTestFailed

keys = st.sampled_from(["a", "b", "c", "d", "ü", "a/b", "m~n", ""]) | st.text(max_size=5)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
objects = st.dictionaries(keys, json_values, max_size=6)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def reference_merge(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, as written; Python dicts keep insertion order like the result must."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    target = dict(target)
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = reference_merge(target.get(key), value)
    return target


# --- merge patch -------------------------------------------------------------------------------


@given(json_values | objects, json_values | objects)
def test_merge_patch_matches_the_reference(document: Any, patch: Any) -> None:
    result = _core.merge_patch(dumps(document), dumps(patch))
    # byte for byte: same members, same order, same number spelling, compact
    assert result == dumps(reference_merge(document, patch))


@st.composite
def patches_for(draw: st.DrawFn, document: Any, depth: int = 0) -> Any:
    """A patch aimed at `document`: it removes, replaces and descends into existing members
    (where the raw merge does its work), and adds new ones."""
    if not isinstance(document, dict) or depth > 3 or draw(st.integers(0, 9)) == 0:
        return draw(json_values | objects)
    patch: dict[str, Any] = {}
    for key, value in document.items():
        action = draw(st.sampled_from(["keep", "keep", "remove", "replace", "descend"]))
        if action == "remove":
            patch[key] = None
        elif action == "replace":
            patch[key] = draw(json_values)
        elif action == "descend":
            patch[key] = draw(patches_for(value, depth + 1))
    patch.update(draw(objects))
    return dict(draw(st.permutations(list(patch.items()))))


@given(st.data())
def test_merge_patch_of_targeted_patches_matches_the_reference(data: st.DataObject) -> None:
    document = data.draw(objects | st.dictionaries(keys, objects, max_size=4))
    patch = data.draw(patches_for(document))
    assert _core.merge_patch(dumps(document), dumps(patch)) == dumps(
        reference_merge(document, patch)
    )


@given(
    st.data(),
    json_values | objects,
    st.sampled_from([None, 0, 2, "\t"]),
    st.booleans(),
)
def test_merge_patch_of_spaced_input_is_compact(
    data: st.DataObject, document: Any, indent: int | str | None, ensure_ascii: bool
) -> None:
    patch = data.draw(patches_for(document))
    spaced = json.dumps(document, indent=indent, ensure_ascii=ensure_ascii).encode()
    spaced_patch = json.dumps(patch, indent=indent, ensure_ascii=ensure_ascii).encode()
    result = _core.merge_patch(b" \r\n" + spaced + b"\n", b"\t" + spaced_patch + b" ")
    assert json.loads(result) == reference_merge(document, patch)
    # compact, with strings and numbers spelled as in the inputs
    assert (
        result
        == json.dumps(json.loads(result), separators=(",", ":"), ensure_ascii=ensure_ascii).encode()
    )


@pytest.mark.parametrize(
    ("document", "patch", "expected"),
    [  # RFC 7386 Appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386_examples(document: Any, patch: Any, expected: Any) -> None:
    assert _core.merge_patch(dumps(document), dumps(patch)) == dumps(expected)


def test_merge_patch_keeps_order_and_numbers() -> None:
    result = _core.merge_patch(
        b'{"z": 1, "a": 2, "m": 3.50, "big": 123456789012345678901234567890, "e": 1E2}',
        b'{"a": null, "z": 5, "new": 1E2, "x": -0.0e-0}',
    )
    assert result == (
        b'{"z":5,"m":3.50,"big":123456789012345678901234567890,"e":1E2,"new":1E2,"x":-0.0e-0}'
    )


def test_merge_patch_copies_strings_as_written() -> None:
    document = b'{"s": "caf\\u00e9 \\ud83d\\ude00 \\/", "t": "\xc3\xa9", "k": {"a b": [1, 2]}}'
    result = _core.merge_patch(document, b'{"t": "\\u00e8", "u": ["\\n", {"v": null}]}')
    assert result == (
        b'{"s":"caf\\u00e9 \\ud83d\\ude00 \\/","t":"\\u00e8","k":{"a b":[1,2]},'
        b'"u":["\\n",{"v":null}]}'
    )


def test_merge_patch_matches_escaped_keys() -> None:
    assert _core.merge_patch(b'{"\\u0061": 1, "b": 2}', b'{"a": null}') == b'{"b":2}'
    assert _core.merge_patch(b'{"a": {"x": 1}}', b'{"\\u0061": {"y": 2}}') == b'{"a":{"x":1,"y":2}}'
    # a new member is written with the patch's spelling of its key
    assert _core.merge_patch(b"{}", b'{"\\u00e9": 1}') == b'{"\\u00e9":1}'


def test_merge_patch_with_repeated_keys() -> None:
    # A repeated key the patch does not name is copied as written, every occurrence.
    assert _core.merge_patch(b'{"a": 1, "b": 0, "a": 2}', b'{"b": 1}') == b'{"a":1,"b":1,"a":2}'
    # One the patch names: the document is read as serde_json and json.loads read it, the
    # last value counting (in the first place), and merged once.
    document = b'{"a": {"x": 1}, "b": 2, "a": {"y": 2}}'
    result = _core.merge_patch(document, b'{"a": {"z": 3}}')
    assert result == b'{"a":{"y":2,"z":3},"b":2}'
    assert json.loads(result) == reference_merge(json.loads(document), {"a": {"z": 3}})
    assert _core.merge_patch(document, b'{"a": null}') == b'{"b":2}'
    assert _core.merge_patch(document, b'{"a": 0}') == b'{"a":0,"b":2}'
    nested = b'{"k": {"a": 1, "a": 2, "b": 3}, "l": [1]}'
    assert _core.merge_patch(nested, b'{"k": {"a": 4}}') == b'{"k":{"a":4,"b":3},"l":[1]}'
    # The patch is read the same way.
    assert _core.merge_patch(b'{"a": 0, "b": 1}', b'{"a": 1, "b": 2, "a": null}') == b'{"b":2}'
    assert _core.merge_patch(b"{}", b'{"a": null, "b": 1, "a": 2}') == b'{"a":2,"b":1}'
    # Repeats cannot multiply the patch: the result stays about as large as the inputs.
    many = b"{" + b'"a":0,' * 10_000 + b'"b":0}'
    assert _core.merge_patch(many, b'{"a": "' + b"x" * 10_000 + b'"}') == (
        b'{"a":"' + b"x" * 10_000 + b'","b":0}'
    )


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), json_values | objects), max_size=6),
    st.dictionaries(st.sampled_from(["a", "b", "d"]), json_values | objects, max_size=3),
)
def test_merge_patch_of_repeated_keys_matches_the_reference(
    members: list[tuple[str, Any]], patch: dict[str, Any]
) -> None:
    document = b"{" + b",".join(dumps(key) + b":" + dumps(value) for key, value in members) + b"}"
    result = _core.merge_patch(document, dumps(patch))
    assert json.loads(result) == reference_merge(json.loads(document), patch)


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_merge_patch_limits_depth(opener: str) -> None:
    closer = "]" if opener == "[" else "}"

    def nested(n: int) -> bytes:
        return (opener * n + "1" * (opener != "[") + closer * n).encode()

    assert _core.merge_patch(nested(127), b'{"b": 1}')
    assert _core.merge_patch(b"{}", nested(127)) == nested(127)
    for document, patch in [(nested(128), b"{}"), (b"{}", nested(128)), (nested(10**5), b"1")]:
        with pytest.raises(JsonError, match="deeper"):
            _core.merge_patch(document, patch)


def test_merge_patch_descends_to_the_depth_limit() -> None:
    # the patch descends into the document: both count their levels from the root
    def deep(innermost: bytes) -> bytes:
        return b'{"a":' * 126 + innermost + b"}" * 126

    result = _core.merge_patch(deep(b'{"b":1}'), deep(b'{"c":2}'))
    assert result == deep(b'{"b":1,"c":2}')
    _core.validate_json(result)
    with pytest.raises(JsonError, match="deeper"):
        _core.merge_patch(deep(b'{"b":1}'), deep(b'{"c":[]}'))
    with pytest.raises(JsonError, match="deeper"):
        _core.merge_patch(deep(b'{"b":[]}'), deep(b'{"c":2}'))


@pytest.mark.parametrize(
    ("document", "patch"),
    [
        (b"{", b"{}"),
        (b"{}", b"{"),
        (b"{} {}", b"{}"),
        (b"{}", b""),
        (b'"\xff"', b"{}"),
        # the untouched parts of the document are checked too
        (b'{"a": 1, "b": [1,]}', b'{"a": 2}'),
        (b'{"a": 1, "b": "\\ud800"}', b'{"a": 2}'),
        (b'{"a": 1, "b": "\x01"}', b'{"a": 2}'),
        (b'{"a": 1, "b": 01}', b'{"a": 2}'),
        (b'{"a": [1, 2}', b'{"a": 2}'),
        (b'{"a": x}', b'{"a": null}'),
        (b'{"a": 1', b'{"a": {"b": 1}}'),
        (b"[1, 2", b'{"a": 1}'),
        (b"nul", b"1"),
        (b'{"a": 1}', b'{"a": [1,]}'),
        (b'{"a": 1}', b'{"a": {"b": nul}}'),
        (b"{}", b'{"\\ud800": 1}'),
    ],
)
def test_merge_patch_rejects_non_json(document: bytes, patch: bytes) -> None:
    with pytest.raises(JsonError):
        _core.merge_patch(document, patch)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["insert", "replace", "delete", "truncate"]),
        st.integers(min_value=0),
        st.sampled_from([*b' {}[],:"\\/-+.0123456789eEaflnrstu', 0, 0x1F, 0x7F, 0xC3, 0xFF]),
    ),
    min_size=1,
    max_size=3,
)


def mutate(data: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, at, byte in changes:
        at %= len(buffer) + 1
        if kind == "insert":
            buffer.insert(at, byte)
        elif kind == "replace" and at < len(buffer):
            buffer[at] = byte
        elif kind == "delete" and at < len(buffer):
            del buffer[at]
        elif kind == "truncate":
            del buffer[at:]
    return bytes(buffer)


def is_json(data: bytes) -> bool:
    try:
        _core.validate_json(data)
    except JsonError:
        return False
    return True


@given(st.data(), objects, mutations, st.booleans())
def test_merge_patch_accepts_exactly_valid_json(
    data: st.DataObject, document: Any, changes: list[tuple[str, int, int]], in_patch: bool
) -> None:
    patch = data.draw(patches_for(document))
    document_bytes, patch_bytes = dumps(document), dumps(patch)
    if in_patch:
        patch_bytes = mutate(patch_bytes, changes)
    else:
        document_bytes = mutate(document_bytes, changes)
    if is_json(document_bytes) and is_json(patch_bytes):
        result = _core.merge_patch(document_bytes, patch_bytes)
        expected = reference_merge(json.loads(document_bytes), json.loads(patch_bytes))
        assert json.loads(result) == expected
    else:
        with pytest.raises(JsonError):
            _core.merge_patch(document_bytes, patch_bytes)


@given(
    st.data(),
    objects | st.dictionaries(keys, objects, max_size=4),
    st.sampled_from([None, 1]),
    st.booleans(),
)
def test_a_merge_restated_as_a_json_patch_makes_the_same_bytes(
    data: st.DataObject, document: Any, indent: int | None, ensure_ascii: bool
) -> None:
    # What a PATCH with a merge patch stores is the JSON Patch; every other node makes the
    # version from it with apply_patches. Writer and readers must hold the same bytes, for
    # input that is spaced, escaped (ensure_ascii) or has exponents (floats) alike.
    patch = data.draw(patches_for(document))
    doc = json.dumps(document, indent=indent, ensure_ascii=ensure_ascii).encode()
    merge = json.dumps(patch, indent=indent, ensure_ascii=ensure_ascii).encode()
    json_patch, result = _core.merge_as_json_patch(doc, merge)
    assert json.loads(result) == reference_merge(document, patch)
    assert _core.apply_patches(doc, [json_patch]) == result


# --- JSON Patch: RFC 6902 Appendix A ----------------------------------------------------------

RFC6902_EXAMPLES = [
    (  # A.1 Adding an Object Member
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
    ),
    (  # A.2 Adding an Array Element
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    (  # A.3 Removing an Object Member
        {"baz": "qux", "foo": "bar"},
        [{"op": "remove", "path": "/baz"}],
        {"foo": "bar"},
    ),
    (  # A.4 Removing an Array Element
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
    ),
    (  # A.5 Replacing a Value
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (  # A.6 Moving a Value
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (  # A.7 Moving an Array Element
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (  # A.8 Testing a Value: Success
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (  # A.10 Adding a Nested Member Object
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (  # A.11 Ignoring Unrecognized Elements
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),
    (  # A.14 ~ Escape Ordering
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
    ),
    (  # A.16 Adding an Array Value
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
]


@pytest.mark.parametrize(("document", "patch", "expected"), RFC6902_EXAMPLES)
def test_json_patch_rfc6902_examples(document: Any, patch: Any, expected: Any) -> None:
    assert json.loads(_core.json_patch(dumps(document), dumps(patch))) == expected


def test_rfc6902_a9_testing_a_value_error() -> None:
    with pytest.raises(PatchTestFailed):
        _core.json_patch(b'{"baz": "qux"}', b'[{"op": "test", "path": "/baz", "value": "bar"}]')


def test_rfc6902_a12_adding_to_a_nonexistent_target() -> None:
    with pytest.raises(PatchError) as info:
        _core.json_patch(b'{"foo": "bar"}', b'[{"op": "add", "path": "/baz/bat", "value": "qux"}]')
    assert not isinstance(info.value, PatchTestFailed)


def test_rfc6902_a13_invalid_json_patch_document() -> None:
    # A repeated "op" makes the operation ambiguous; it is refused, not read as the last one.
    with pytest.raises(PatchError, match='"op" twice'):
        _core.json_patch(
            b'{"foo": "bar"}', b'[{"op": "add", "path": "/baz", "value": "qux", "op": "remove"}]'
        )


def test_rfc6902_a15_comparing_strings_and_numbers() -> None:
    with pytest.raises(PatchTestFailed):
        _core.json_patch(b'{"/": 9, "~1": 10}', b'[{"op": "test", "path": "/~01", "value": "10"}]')


# --- JSON Patch: more cases -------------------------------------------------------------------

DOC = {"a": {"b": [1, 2, 3]}, "c": "d", "e~f": {"g/h": True}}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ([], DOC),
        ([{"op": "add", "path": "", "value": [1]}], [1]),
        ([{"op": "replace", "path": "", "value": None}], None),
        ([{"op": "add", "path": "/a/b/3", "value": 4}], {**DOC, "a": {"b": [1, 2, 3, 4]}}),
        ([{"op": "add", "path": "/a/b/0", "value": 0}], {**DOC, "a": {"b": [0, 1, 2, 3]}}),
        ([{"op": "add", "path": "/c", "value": 1}], {**DOC, "c": 1}),
        ([{"op": "add", "path": "/", "value": 1}], {**DOC, "": 1}),
        ([{"op": "remove", "path": "/e~0f/g~1h"}], {**DOC, "e~f": {}}),
        ([{"op": "replace", "path": "/a/b/2", "value": {}}], {**DOC, "a": {"b": [1, 2, {}]}}),
        ([{"op": "move", "from": "/a", "path": "/a"}], DOC),
        (
            [{"op": "move", "from": "/a/b", "path": "/b"}],
            {"a": {}, "c": "d", "e~f": DOC["e~f"], "b": [1, 2, 3]},
        ),
        ([{"op": "move", "from": "/a/b/0", "path": "/a/b/-"}], {**DOC, "a": {"b": [2, 3, 1]}}),
        (
            [{"op": "copy", "from": "/a/b", "path": "/a/b/1"}],
            {**DOC, "a": {"b": [1, [1, 2, 3], 2, 3]}},
        ),
        ([{"op": "copy", "from": "", "path": "/self"}], {**DOC, "self": DOC}),
        ([{"op": "test", "path": "", "value": DOC}], DOC),
        ([{"op": "test", "path": "/a/b/0", "value": 1.0}], DOC),
        ([{"op": "test", "path": "/e~0f", "value": {"g/h": True}}], DOC),
        (
            [
                {"op": "add", "path": "/x", "value": {}},
                {"op": "add", "path": "/x/y", "value": [None]},
                {"op": "remove", "path": "/c"},
                {"op": "test", "path": "/x", "value": {"y": [None]}},
            ],
            {"a": DOC["a"], "e~f": DOC["e~f"], "x": {"y": [None]}},
        ),
    ],
)
def test_json_patch_applies(patch: list[Any], expected: Any) -> None:
    result = _core.json_patch(dumps(DOC), dumps(patch))
    assert json.loads(result) == expected
    assert result == dumps(json.loads(result))


def test_json_patch_keeps_member_order() -> None:
    result = _core.json_patch(
        b'{"z":1,"a":2,"m":3}',
        b'[{"op":"remove","path":"/z"},{"op":"add","path":"/b","value":0},'
        b'{"op":"replace","path":"/a","value":9}]',
    )
    assert result == b'{"a":9,"m":3,"b":0}'


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/n", "1"),
        ("/n", "1.0"),
        ("/n", "10e-1"),
        ("/n", "100E-2"),
        ("/n", "0.1e+1"),
        ("/o", '{"y": 2, "x": 1}'),  # member order does not matter
        ("/z", "0"),
        ("/z", "-0"),
    ],
)
def test_test_compares_numbers_by_value(path: str, value: str) -> None:
    document = b'{"n": 1.00, "o": {"x": 1, "y": 2.0e0}, "z": -0.0}'
    patch = f'[{{"op": "test", "path": "{path}", "value": {value}}}]'.encode()
    # numbers keep their spelling; only an exponent gains its sign
    assert _core.json_patch(document, patch) == b'{"n":1.00,"o":{"x":1,"y":2.0e+0},"z":-0.0}'


@pytest.mark.parametrize(
    "test_op",
    [
        {"op": "test", "path": "/n", "value": "1"},
        {"op": "test", "path": "/n", "value": True},
        {"op": "test", "path": "/n", "value": 1.0000001},
        {"op": "test", "path": "/o", "value": {"x": 1}},
        {"op": "test", "path": "/l", "value": [1, 2]},
        {"op": "test", "path": "/l", "value": [2, 1]},
        {"op": "test", "path": "/missing", "value": None},
        {"op": "test", "path": "/l/5", "value": 1},
    ],
)
def test_test_failures(test_op: dict[str, Any]) -> None:
    with pytest.raises(PatchTestFailed):
        _core.json_patch(b'{"n": 1, "o": {"x": 1, "y": 2}, "l": [1, 2, 3]}', dumps([test_op]))


@pytest.mark.parametrize(
    "patch",
    [
        [{"op": "add", "path": "/missing/x", "value": 1}],
        [{"op": "add", "path": "/a/b/4", "value": 1}],
        [{"op": "add", "path": "/a/b/01", "value": 1}],
        [{"op": "add", "path": "/a/b/-1", "value": 1}],
        [{"op": "add", "path": "/c/x", "value": 1}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "remove", "path": "/a/b/3"}],
        [{"op": "remove", "path": "/a/b/-"}],
        [{"op": "remove", "path": ""}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "move", "from": "/a", "path": "/a/x"}],
        [{"op": "move", "from": "", "path": "/x"}],
        [{"op": "move", "from": "/missing", "path": "/x"}],
        [{"op": "copy", "from": "/missing", "path": "/x"}],
        [{"op": "add", "path": "/x", "value": 1}, {"op": "remove", "path": "/missing"}],
    ],
)
def test_operations_that_cannot_apply(patch: list[Any]) -> None:
    with pytest.raises(PatchError) as info:
        _core.json_patch(dumps(DOC), dumps(patch))
    assert not isinstance(info.value, PatchTestFailed)


@pytest.mark.parametrize(
    "patch",
    [
        {"op": "add", "path": "/x", "value": 1},
        [1],
        [[]],
        [{}],
        [{"path": "/x"}],
        [{"op": "jump", "path": "/x"}],
        [{"op": "ADD", "path": "/x", "value": 1}],
        [{"op": 1, "path": "/x"}],
        [{"op": "add", "value": 1}],
        [{"op": "add", "path": "/x"}],
        [{"op": "replace", "path": "/x"}],
        [{"op": "test", "path": "/x"}],
        [{"op": "move", "path": "/x"}],
        [{"op": "copy", "path": "/x"}],
        [{"op": "remove", "path": "x"}],
        [{"op": "remove", "path": "/a~2"}],
        [{"op": "remove", "path": "/a~"}],
        [{"op": "remove", "path": None}],
        [{"op": "move", "path": "/x", "from": 1}],
    ],
)
def test_malformed_patches(patch: Any) -> None:
    with pytest.raises(PatchError) as info:
        _core.json_patch(dumps(DOC), dumps(patch))
    assert not isinstance(info.value, PatchTestFailed)


@pytest.mark.parametrize(
    ("document", "patch"),
    [
        (b"{", b"[]"),
        (b"{}", b"["),
        (b"{}", b"[] []"),
        (b"{}", b'{"op": }'),  # the wrong shape, and not JSON either: not JSON wins
        (b"{}", b'[{"op": "bad", "x": "\\ud800"}]'),
        (b"\xff", b"[]"),
    ],
)
def test_json_patch_rejects_non_json(document: bytes, patch: bytes) -> None:
    with pytest.raises(JsonError):
        _core.json_patch(document, patch)


def test_json_patch_bounds_depth_and_growth() -> None:
    deep = "[" * 125 + "]" * 125  # the deepest value a patch can carry
    ok = _core.json_patch(b'{"a":{}}', f'[{{"op":"add","path":"/a/b","value":{deep}}}]'.encode())
    _core.validate_json(ok)
    with pytest.raises(PatchError, match="deeper"):
        _core.json_patch(ok, b'[{"op":"copy","from":"/a","path":"/a/b/0"}]')
    doubling = [{"op": "copy", "from": "", "path": f"/x{i}"} for i in range(64)]
    with pytest.raises(PatchError, match="too far"):
        _core.json_patch(b'{"k": "0123456789"}', dumps(doubling))


@given(json_values)
def test_identity_patches(document: Any) -> None:
    data = dumps(document)
    assert _core.json_patch(data, b"[]") == data
    assert _core.json_patch(data, dumps([{"op": "test", "path": "", "value": document}])) == data
    replaced = _core.json_patch(b"{}", dumps([{"op": "replace", "path": "", "value": document}]))
    assert replaced == data


def test_errors_are_value_errors() -> None:
    assert issubclass(PatchTestFailed, PatchError)
    assert issubclass(PatchError, ValueError)
    assert issubclass(JsonError, ValueError)
    assert not issubclass(JsonError, PatchError)
