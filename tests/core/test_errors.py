"""The exceptions of fastctx._core: each kind of error raises one class, with its message."""

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from fastctx import _core
from fastctx._core import FrameError, JsonError, PatchError, PatchTestFailed

STUB = Path(_core.__file__).with_name("_core.pyi")
SESSION = "0123456789ABCDEFGHIJKL"


def _crc_flipped() -> bytes:
    frame = bytearray(_core.encode_frame(b"{}", 1, 0, 0, 0))
    frame[-1] ^= 1
    return bytes(frame)


CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    (
        "truncated frame",
        lambda: _core.decode_frame(b"FX"),
        FrameError,
        "truncated frame: 2 bytes, a header needs at least 49",
    ),
    (
        "header only",
        lambda: _core.frame_version(b"XX" + bytes(47)),
        FrameError,
        "not a fastctx frame (bad magic)",
    ),
    ("checksum", lambda: _core.decode_frame(_crc_flipped()), FrameError, "frame checksum mismatch"),
    (
        "session",
        lambda: _core.encode_frame(b"{}", 1, 0, 0, 0, ""),
        ValueError,
        "session id must not be empty",
    ),
    (
        "validate",
        lambda: _core.validate_json(b"{"),
        JsonError,
        "EOF while parsing an object at line 1 column 1",
    ),
    (
        "validate UTF-8",
        lambda: _core.validate_json(b"\xff"),
        JsonError,
        "invalid UTF-8: invalid utf-8 sequence of 1 bytes from index 0",
    ),
    (
        "merge document",
        lambda: _core.merge_patch(b"{", b"{}"),
        JsonError,
        "document: expected a string at byte 1",
    ),
    (
        "merge patch UTF-8",
        lambda: _core.merge_patch(b"{}", b"\xff"),
        JsonError,
        "patch: invalid UTF-8: invalid utf-8 sequence of 1 bytes from index 0",
    ),
    (
        "JSON Patch not JSON",
        lambda: _core.json_patch(b"{}", b"{"),
        JsonError,
        "patch: EOF while parsing an object at line 1 column 1",
    ),
    (
        "JSON Patch shape",
        lambda: _core.json_patch(b"{}", b"[1]"),
        PatchError,
        "invalid JSON Patch: invalid type: integer `1`, expected a JSON Patch operation object "
        "at line 1 column 2",
    ),
    (
        "JSON Patch operation",
        lambda: _core.json_patch(b'{"c":"d"}', b'[{"op":"remove","path":"/x"}]'),
        PatchError,
        'operation 0: remove /x: no member "x"',
    ),
    (
        "JSON Patch test",
        lambda: _core.json_patch(
            b'{"c":"d"}',
            b'[{"op":"test","path":"/c","value":"d"},{"op":"test","path":"/c","value":1}]',
        ),
        PatchTestFailed,
        'operation 1: test /c: expected 1, found "d"',
    ),
]


@pytest.mark.parametrize(
    ("call", "kind", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_each_error_raises_its_class_and_message(
    call: Callable[[], object], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as info:
        call()
    assert type(info.value) is kind
    assert str(info.value) == message


def test_classes_are_value_errors_of_the_module() -> None:
    assert PatchTestFailed.__mro__[1:3] == (PatchError, ValueError)
    for kind in (FrameError, JsonError, PatchError):
        assert kind.__mro__[1] is ValueError
    for kind in (FrameError, JsonError, PatchError, PatchTestFailed):
        assert kind.__module__ == "fastctx._core"


def test_classes_say_what_the_stub_says() -> None:
    stub = ast.parse(STUB.read_text())
    classes = {node.name: node for node in stub.body if isinstance(node, ast.ClassDef)}
    for kind in (FrameError, JsonError, PatchError, PatchTestFailed):
        assert kind.__doc__ == ast.get_docstring(classes[kind.__name__]), kind.__name__
