"""_core.Keyring and sealed frames: AES-256-GCM under named keys, bound to a context's name."""

from __future__ import annotations

import os

import pytest

from fastctx import _core

K1, K2 = os.urandom(32), os.urandom(32)
DOCUMENT = b'{"card":"4111 1111 1111 1111","note":"' + b"x" * 2000 + b'"}'


def test_a_sealed_frame_keeps_its_header_in_the_clear_and_its_payload_sealed() -> None:
    ring = _core.Keyring([("k1", K1)])
    frame = _core.encode_frame(DOCUMENT, 3, 1, 2, 0, "S" * 22, ring, b"acme/token")
    assert b"4111" not in frame
    assert b"xxxx" not in frame  # compressed, then sealed
    assert _core.frame_version(frame) == 3  # what Redis's scripts read
    decoded = _core.decode_frame(frame, ring, b"acme/token")
    assert decoded.payload == DOCUMENT
    assert decoded.key_id == "k1"
    assert decoded.session == "S" * 22
    assert _core.decode_frame(_core.encode_frame(DOCUMENT, 1, 1, 1, 0)).key_id is None


def test_a_sealed_frame_opens_only_under_its_name_and_with_its_key() -> None:
    ring = _core.Keyring([("k1", K1)])
    frame = _core.encode_frame(DOCUMENT, 1, 1, 1, 0, None, ring, b"acme/token")
    with pytest.raises(_core.FrameError, match="no key ring"):
        _core.decode_frame(frame)
    with pytest.raises(_core.FrameError, match="does not open"):
        _core.decode_frame(frame, ring, b"globex/token")  # copied under another name
    with pytest.raises(_core.FrameError, match="not in the key ring"):
        _core.decode_frame(frame, _core.Keyring([("k2", K2)]), b"acme/token")


def test_a_ring_with_a_new_key_in_front_reads_what_the_old_one_sealed() -> None:
    old = _core.Keyring([("k1", K1)])
    rotated = _core.Keyring([("k2", K2), ("k1", K1)])
    assert rotated.primary == "k2"
    sealed = old.seal(b"value", b"aad")
    assert _core.sealed_key_id(sealed) == "k1"
    assert rotated.open(sealed, b"aad") == b"value"
    assert _core.sealed_key_id(rotated.seal(b"value", b"aad")) == "k2"
    assert _core.sealed_key_id(b'{"plain": true}') is None


@pytest.mark.parametrize(
    "keys",
    [[], [("k1", b"short")], [("", K1)], [("k 1", K1)], [("k1", K1), ("k1", K2)]],
)
def test_a_bad_ring_is_refused(keys: list[tuple[str, bytes]]) -> None:
    with pytest.raises(ValueError, match="key"):
        _core.Keyring(keys)
