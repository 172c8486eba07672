"""Frames: header + crc32 + payload, lz4-compressed from COMPRESS_THRESHOLD bytes."""

import json
import os
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastctx import _core
from fastctx._core import FrameError

U64 = 2**64 - 1
SESSION = "0123456789ABCDEFGHIJKL"
FIXED = 45  # header bytes before the session id

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=50,
)
payloads = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    # long, compressible documents
    st.lists(json_values, min_size=20, max_size=200).map(lambda v: json.dumps(v * 3).encode()),
    st.binary(max_size=3000),  # the payload is not validated; any bytes round-trip
)
sessions = st.none() | st.text(
    st.characters(min_codepoint=0, max_codepoint=127), min_size=1, max_size=255
)
timestamps = st.integers(min_value=0, max_value=2**63 - 1)


def document(size: int) -> bytes:
    items: list[dict[str, object]] = []
    length = 2
    while length < size:
        item = {"id": len(items), "role": "user", "content": "hello there " * 3}
        items.append(item)
        length += len(json.dumps(item)) + 2
    return json.dumps(items).encode()


def frame_of(payload: bytes, session: str | None = SESSION, version: int = 7) -> bytes:
    return _core.encode_frame(payload, version, 1_764_000_000_000, 1_764_000_000_500, 0, session)


def checksummed(frame: bytes | bytearray) -> bytes:
    """What a frame's crc32 covers: format 2 leaves out the version and updated_at (which move
    in place when a patch is appended), format 1 covers the whole header."""
    crc_at = FIXED + frame[44]
    header = bytes(frame[:crc_at])
    if frame[2] != 1:
        header = header[:4] + header[12:20] + header[28:]
    return header + bytes(frame[crc_at + 4 :])


def recrc(frame: bytearray) -> bytes:
    """Re-checksum an edited frame, as a forger would, so the header checks themselves show."""
    crc_at = FIXED + frame[44]
    frame[crc_at : crc_at + 4] = struct.pack("<I", zlib.crc32(checksummed(frame)))
    return bytes(frame)


@given(
    payloads,
    st.integers(min_value=0, max_value=2**63 - 1),
    timestamps,
    timestamps,
    timestamps,
    sessions,
)
def test_round_trip(
    payload: bytes, version: int, created: int, updated: int, expires: int, session: str | None
) -> None:
    frame = _core.encode_frame(payload, version, created, updated, expires, session)
    decoded = _core.decode_frame(frame)
    assert decoded.payload == payload
    assert (decoded.version, decoded.created_at, decoded.updated_at, decoded.expires_at) == (
        version,
        created,
        updated,
        expires,
    )
    assert decoded.session == session
    assert decoded.size == len(payload)
    assert decoded.stored_size == len(frame)
    assert decoded.compressed == (len(frame) < FIXED + 4 + len(session or "") + len(payload))
    assert _core.frame_version(frame) == version
    assert struct.unpack_from("<Q", frame, _core.VERSION_OFFSET)[0] == version


def test_layout() -> None:
    assert _core.VERSION_OFFSET == 4
    empty = frame_of(b"", session=None)
    assert len(empty) == _core.FRAME_HEADER_SIZE
    assert len(frame_of(b"{}", session=SESSION)) == _core.FRAME_HEADER_SIZE + len(SESSION) + 2
    assert _core.UPDATED_AT_OFFSET == 20
    assert empty[:4] == b"FX\x02\x00"
    frame = frame_of(b"[1]", session="ab", version=2**64 - 2)
    fields = struct.unpack_from("<2sBBQQQQIIB", frame)
    assert fields == (b"FX", 2, 0, 2**64 - 2, 1_764_000_000_000, 1_764_000_000_500, 0, 3, 3, 2)
    assert frame[FIXED : FIXED + 2] == b"ab"
    (crc,) = struct.unpack_from("<I", frame, FIXED + 2)
    assert crc == zlib.crc32(frame[:4] + frame[12:20] + frame[28 : FIXED + 2] + b"[1]")
    assert frame.endswith(b"[1]")


def test_version_and_updated_at_move_in_place() -> None:
    frame = bytearray(frame_of(document(3000)))
    frame[4:12] = (9).to_bytes(8, "little")
    frame[20:28] = (77).to_bytes(8, "little")
    decoded = _core.decode_frame(bytes(frame))
    assert (decoded.version, decoded.updated_at) == (9, 77)
    assert decoded.payload == document(3000)
    assert _core.frame_version(bytes(frame)) == 9


def test_reads_format_1_frames() -> None:
    """Frames written before format 2 (checksummed whole) are read as they are."""
    old = bytearray(frame_of(document(3000)))
    old[2] = 1
    old_frame = recrc(old)
    decoded = _core.decode_frame(old_frame)
    assert decoded.payload == document(3000)
    moved = bytearray(old_frame)
    moved[4] ^= 1  # format 1 checksums the version too
    with pytest.raises(FrameError):
        _core.decode_frame(bytes(moved))


def test_extreme_values() -> None:
    frame = _core.encode_frame(b"1", U64, U64, U64, U64, "x" * 255)
    decoded = _core.decode_frame(frame)
    assert (decoded.version, decoded.created_at, decoded.expires_at) == (U64, U64, U64)
    assert decoded.session == "x" * 255


def test_compression_kicks_in_at_the_threshold() -> None:
    threshold = _core.COMPRESS_THRESHOLD
    below = b"[" + b"1," * ((threshold - 3) // 2) + b"1]"
    assert len(below) < threshold
    assert not _core.decode_frame(frame_of(below)).compressed
    for size in (threshold, 16 * 1024, 1024 * 1024):
        payload = document(size)
        frame = frame_of(payload)
        decoded = _core.decode_frame(frame)
        assert decoded.compressed
        assert decoded.stored_size < decoded.size / 2
        assert decoded.payload == payload


def test_incompressible_payload_is_stored_raw() -> None:
    payload = os.urandom(10_000)
    decoded = _core.decode_frame(frame_of(payload))
    assert not decoded.compressed
    assert decoded.payload == payload
    assert decoded.stored_size == _core.FRAME_HEADER_SIZE + len(SESSION) + len(payload)


@pytest.mark.parametrize(
    "payload", [b"", b'{"a":1}', document(5000)], ids=["empty", "small", "lz4"]
)
def test_every_truncation_is_rejected(payload: bytes) -> None:
    frame = frame_of(payload)
    for length in range(len(frame)):
        with pytest.raises(FrameError):
            _core.decode_frame(frame[:length])
        with pytest.raises(FrameError):
            _core.frame_version(frame[:length])
    with pytest.raises(FrameError):
        _core.decode_frame(frame + b"\x00")
    with pytest.raises(FrameError):
        _core.frame_version(frame + b"\x00")


@pytest.mark.parametrize("payload", [b'{"a":1}', document(2000)], ids=["small", "lz4"])
def test_every_single_byte_flip_is_rejected(payload: bytes) -> None:
    """Every byte but the version and updated_at, which move in place (see above)."""
    frame = frame_of(payload)
    for at in [at for at in range(len(frame)) if not (4 <= at < 12 or 20 <= at < 28)]:
        for mask in (0x01, 0x80, 0xFF):
            corrupted = bytearray(frame)
            corrupted[at] ^= mask
            with pytest.raises(FrameError):
                _core.decode_frame(bytes(corrupted))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, ord("X"), "magic"),
        (1, ord("Y"), "magic"),
        (2, 0, "format version"),
        (2, 3, "format version"),
        (3, 0x08, "flags"),  # bit 2 (0x04) says the payload is sealed: see test_seal.py
        (3, 0x81, "flags"),
        (3, 2, "codec"),
        (3, 3, "codec"),
    ],
)
def test_bad_header_is_rejected(offset: int, value: int, message: str) -> None:
    frame = bytearray(frame_of(document(3000)))
    frame[offset] = value
    forged = recrc(frame)
    for function in (_core.decode_frame, _core.frame_version):
        with pytest.raises(FrameError, match=message):
            function(forged)


def test_a_frame_in_the_clear_flagged_as_sealed_is_rejected() -> None:
    frame = bytearray(frame_of(document(3000)))
    frame[3] |= 0x04
    forged = recrc(frame)
    with pytest.raises(FrameError, match="sealed"):
        _core.decode_frame(forged)
    with pytest.raises(FrameError, match="not a sealed value"):
        _core.decode_frame(forged, _core.Keyring([("k1", bytes(32))]), b"a/b")


def test_forged_lengths_are_rejected() -> None:
    frame = bytearray(frame_of(document(3000)))
    raw = struct.unpack_from("<I", frame, 36)[0]
    for claimed in (0, raw - 1, raw + 1, 64 * 1024 * 1024, 2**32 - 1):
        forged = bytearray(frame)
        struct.pack_into("<I", forged, 36, claimed)
        with pytest.raises(FrameError):
            _core.decode_frame(recrc(forged))
    uncompressed = bytearray(frame_of(b'{"a":1}'))
    struct.pack_into("<I", uncompressed, 36, 8)
    with pytest.raises(FrameError):
        _core.decode_frame(recrc(uncompressed))
    # a flag that says "lz4" over bytes that are not lz4
    garbage = bytearray(frame_of(os.urandom(200)))
    garbage[3] = 1
    with pytest.raises(FrameError):
        _core.decode_frame(recrc(garbage))


def test_non_ascii_session_in_a_frame_is_rejected() -> None:
    frame = bytearray(frame_of(b"{}", session="ab"))
    frame[FIXED] = 0xC3
    with pytest.raises(FrameError, match="ASCII"):
        _core.decode_frame(recrc(frame))


def test_garbage_is_rejected() -> None:
    for _ in range(200):
        with pytest.raises(FrameError):
            _core.decode_frame(b"FX\x01\x01" + os.urandom(100))


@pytest.mark.parametrize("session", ["", "é", "x" * 256])
def test_bad_session_is_refused(session: str) -> None:
    with pytest.raises(ValueError, match="session"):
        frame_of(b"{}", session=session)


@pytest.mark.parametrize("value", [-1, 2**64])
def test_out_of_range_integers_are_refused(value: int) -> None:
    with pytest.raises(OverflowError):
        _core.encode_frame(b"{}", value, 0, 0, 0)
    with pytest.raises(OverflowError):
        _core.encode_frame(b"{}", 1, 0, 0, value)


def test_argument_types() -> None:
    with pytest.raises(TypeError):
        _core.encode_frame("{}", 1, 0, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.decode_frame("FX")  # type: ignore[arg-type]


def test_frame_is_immutable() -> None:
    decoded = _core.decode_frame(frame_of(b"{}"))
    with pytest.raises(AttributeError):
        decoded.version = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        _core.Frame()
    assert repr(decoded) == (
        f"Frame(version=7, size=2, stored_size={len(frame_of(b'{}'))}, compressed=False, "
        f"session='{SESSION}')"
    )


def test_frame_error_is_a_value_error() -> None:
    assert issubclass(FrameError, ValueError)
    with pytest.raises(ValueError, match="truncated"):
        _core.decode_frame(b"FX")
