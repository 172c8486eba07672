"""Micro benchmarks: the Rust Context Serializer (frames, merge patch) against Python peers, and
the codecs a frame could store its payload with."""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import orjson
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fastctx import _core

try:
    import zstandard
except ImportError:  # the bench extra is not installed: the zstd cases are skipped
    zstandard = None

Json = dict[str, Any]

# --- realistic contexts -----------------------------------------------------------------------

# Message text from a vocabulary wide enough that compression ratios stay realistic (about 2x).
VOCABULARY = """
the order was shipped to customer after payment cleared and agent confirmed address refund
policy allows returns within thirty days please check invoice status again later model answered
with summary of previous turns tool call returned weather data for berlin tomorrow delivery
window warehouse courier tracking number changed because parcel delayed sorry about that could
you send photo damaged item replacement approved credit note issued account settings password
reset email verified subscription renews monthly discount code expired yesterday support ticket
escalated engineer investigating latency spike region europe west cache miss database replica
"""
WORDS = VOCABULARY.split()
KIB = 1024


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def conversation(min_bytes: int, seed: int = 7) -> Json:
    """An LLM conversation: turns keyed by id, so a merge patch can add one (RFC 7386 has no
    array append)."""
    rng = random.Random(seed)
    doc: Json = {
        "conversation": f"conv_{rng.getrandbits(64):016x}",
        "model": "gpt-large-2026-01",
        "user": {"id": "u_1842", "locale": "en-GB", "plan": "pro"},
        "system": "You are a helpful support agent for an online shop.",
        "status": "active",
        "turns": {},
    }
    # The length is kept up to date turn by turn: dumping the whole document after each turn
    # would take seconds for the larger contexts.
    length = len(json.dumps(doc, separators=(",", ":")))
    n = 0
    while length < min_bytes:
        n += 1
        key = f"t{n:04d}"
        turn = doc["turns"][key] = {
            "role": "user" if n % 2 else "assistant",
            "content": _text(rng, rng.randint(8, 40)),
            "tokens": rng.randint(10, 400),
            "at": 1_764_000_000_000 + n * 9_137,
            "trace": f"{rng.getrandbits(128):032x}",
        }
        length += len(json.dumps({key: turn}, separators=(",", ":"))) - (2 if n == 1 else 1)
    return doc


def transaction(min_bytes: int, seed: int = 11) -> Json:
    """A checkout's state as it travels through services: items, payments, an audit trail."""
    rng = random.Random(seed)
    doc: Json = {
        "transaction": f"tx_{rng.getrandbits(64):016x}",
        "status": "authorized",
        "currency": "EUR",
        "customer": {"id": "c_99120", "email": "ada@example.com", "tier": "silver"},
        "shipping": {"country": "DE", "city": "Berlin", "method": "express"},
        "items": [],
        "payments": [{"provider": "card", "amount": 0.0, "state": "authorized"}],
        "audit": [],
    }
    n = 0
    while len(json.dumps(doc, separators=(",", ":"))) < min_bytes:
        n += 1
        if n % 2:
            price = rng.randint(199, 19_999) / 100
            doc["items"].append(
                {
                    "sku": f"SKU-{rng.randint(10_000, 99_999)}",
                    "qty": rng.randint(1, 4),
                    "price": price,
                }
            )
        else:
            service = rng.choice(["cart", "pricing", "fraud", "payment", "inventory"])
            doc["audit"].append({"at": 1_764_000_000_000 + n * 311, "service": service})
    return doc


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# Each context as stored (bytes) and the merge patch a service would send to it next.
CONTEXTS: dict[str, tuple[bytes, bytes]] = {}
for _size in (1, 16):
    _conv = conversation(_size * KIB)
    CONTEXTS[f"conversation-{_size}k"] = (
        compact(_conv),
        compact(
            {
                "status": "awaiting_user",
                "draft": None,
                "user": {"plan": None, "seen_at": 1_764_000_123_456},
                "turns": {
                    f"t{len(_conv['turns']) + 1:04d}": {
                        "role": "assistant",
                        "content": "Your refund was issued today.",
                        "tokens": 42,
                        "at": 1_764_000_999_000,
                    }
                },
            }
        ),
    )
    CONTEXTS[f"transaction-{_size}k"] = (
        compact(transaction(_size * KIB)),
        compact(
            {
                "status": "captured",
                "customer": {"email": None, "tier": "gold"},
                "payments": [{"provider": "card", "amount": 118.4, "state": "captured"}],
                "captured_at": 1_764_000_777_000,
            }
        ),
    )
CONTEXT_IDS = sorted(CONTEXTS)
SESSION = "0123456789ABCDEFGHIJKL"
NOW = 1_764_000_000_000

# --- frames ---------------------------------------------------------------------------------

# The Rust layout, with zlib (level 1, its fastest) standing in for lz4, which the stdlib lacks.
PY_HEADER = struct.Struct("<2sBBQQQQIIB")
PY_CRC = struct.Struct("<I")
PY_ZLIB = 1


def py_encode_frame(
    payload: bytes, version: int, created: int, updated: int, expires: int, session: str | None
) -> bytes:
    sid = session.encode("ascii") if session else b""
    codec, stored = 0, payload
    if len(payload) >= _core.COMPRESS_THRESHOLD:
        packed = zlib.compress(payload, 1)
        if len(packed) < len(payload):
            codec, stored = PY_ZLIB, packed
    head = PY_HEADER.pack(
        b"FX", 2, codec, version, created, updated, expires, len(payload), len(stored), len(sid)
    )
    head += sid
    return head + PY_CRC.pack(zlib.crc32(stored, zlib.crc32(_checksummed(head)))) + stored


def _checksummed(head: bytes | memoryview) -> bytes:
    """Format 2 checksums the header but its version and updated_at (which move in place)."""
    return bytes(head[:4]) + bytes(head[12:20]) + bytes(head[28:])


def py_decode_frame(frame: bytes) -> tuple[int, int, int, int, str | None, bytes]:
    """(version, created, updated, expires, session, payload), verified like decode_frame."""
    magic, fmt, codec, version, created, updated, expires, raw_len, stored_len, slen = (
        PY_HEADER.unpack_from(frame)
    )
    crc_at = PY_HEADER.size + slen
    offset = crc_at + 4
    if magic != b"FX" or fmt != 2 or codec > PY_ZLIB or len(frame) - offset != stored_len:
        raise ValueError("bad frame")
    view = memoryview(frame)
    crc = zlib.crc32(view[offset:], zlib.crc32(_checksummed(view[:crc_at])))
    if crc != PY_CRC.unpack_from(frame, crc_at)[0]:
        raise ValueError("bad checksum")
    payload = zlib.decompress(view[offset:], bufsize=raw_len) if codec else frame[offset:]
    if len(payload) != raw_len:
        raise ValueError("bad length")
    session = frame[PY_HEADER.size : crc_at].decode("ascii") if slen else None
    return version, created, updated, expires, session, payload


def rust_write(body: bytes) -> bytes:
    """The registry's write path: reject what is not JSON, then frame it."""
    _core.validate_json(body)
    return _core.encode_frame(body, 3, NOW, NOW + 1, NOW + 86_400_000, SESSION)


def _python_write(validate: Callable[[bytes], object]) -> Callable[[bytes], bytes]:
    def write(body: bytes) -> bytes:
        validate(body)
        return py_encode_frame(body, 3, NOW, NOW + 1, NOW + 86_400_000, SESSION)

    return write


WRITERS: dict[str, Callable[[bytes], bytes]] = {
    "rust": rust_write,
    "python-json": _python_write(json.loads),
    "python-orjson": _python_write(orjson.loads),
    "python-msgspec": _python_write(msgspec.json.decode),
}


# What each write path raises for a body that is not JSON (all subclass ValueError).
REJECTS: dict[str, type[Exception]] = {
    "rust": _core.JsonError,
    "python-json": json.JSONDecodeError,
    "python-orjson": orjson.JSONDecodeError,
    "python-msgspec": msgspec.DecodeError,
}


def rust_read(frame: bytes) -> tuple[int, int, int, int, str | None, bytes]:
    f = _core.decode_frame(frame)
    return f.version, f.created_at, f.updated_at, f.expires_at, f.session, f.payload


# decode_frame builds its Frame eagerly (payload included), so it is timed as it is.
READERS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], Any]]] = {
    "rust": (rust_write, _core.decode_frame),
    "python": (WRITERS["python-orjson"], py_decode_frame),
}


def test_frames_are_equivalent() -> None:
    expected = (3, NOW, NOW + 1, NOW + 86_400_000, SESSION)
    for body, _ in CONTEXTS.values():
        rust = rust_read(rust_write(body))
        assert rust == py_decode_frame(WRITERS["python-orjson"](body)) == (*expected, body)
        # Every benchmarked context is past the threshold, so both sides pay for compression.
        assert _core.decode_frame(rust_write(body)).compressed
        assert py_decode_frame(WRITERS["python-json"](body))[-1] == body
        assert PY_HEADER.unpack_from(WRITERS["python-json"](body))[2] == PY_ZLIB
        for name, write in WRITERS.items():
            with pytest.raises(REJECTS[name]):
                write(body[:-1])
            assert name == "rust" or write(body) == WRITERS["python-json"](body)
    # Below the threshold nothing is compressed, and the two frames are the same bytes.
    small = compact({"order": 42, "items": ["apple"]})
    assert rust_write(small) == WRITERS["python-json"](small)


@pytest.mark.parametrize("impl", list(WRITERS))
@pytest.mark.parametrize("context", CONTEXT_IDS)
def test_frame_encode(benchmark: BenchmarkFixture, context: str, impl: str) -> None:
    benchmark.group = f"frame-encode-{context}"
    body = CONTEXTS[context][0]
    frame = benchmark(WRITERS[impl], body)
    benchmark.extra_info["stored_size"] = len(frame)


@pytest.mark.parametrize("impl", list(READERS))
@pytest.mark.parametrize("context", CONTEXT_IDS)
def test_frame_decode(benchmark: BenchmarkFixture, context: str, impl: str) -> None:
    benchmark.group = f"frame-decode-{context}"
    write, read = READERS[impl]
    body = CONTEXTS[context][0]
    decoded = benchmark(read, write(body))
    assert (decoded.payload if impl == "rust" else decoded[-1]) == body


# --- sealed frames (FASTCTX_ENCRYPTION_KEYS): what AES-256-GCM adds to a write and a miss ---

RING = _core.Keyring([("bench", bytes(range(32)))])
AAD = b"tenant/0123456789ABCDEFGHIJKL"


def sealed_write(body: bytes) -> bytes:
    _core.validate_json(body)
    return _core.encode_frame(body, 3, NOW, NOW + 1, NOW + 86_400_000, SESSION, RING, AAD)


def sealed_read(frame: bytes) -> _core.Frame:
    return _core.decode_frame(frame, RING, AAD)


@pytest.mark.parametrize("sealed", ["clear", "sealed"])
@pytest.mark.parametrize("context", CONTEXT_IDS)
def test_sealed_frame_encode(benchmark: BenchmarkFixture, context: str, sealed: str) -> None:
    benchmark.group = f"sealed-encode-{context}"
    body = CONTEXTS[context][0]
    frame = benchmark(sealed_write if sealed == "sealed" else rust_write, body)
    benchmark.extra_info["stored_size"] = len(frame)


@pytest.mark.parametrize("sealed", ["clear", "sealed"])
@pytest.mark.parametrize("context", CONTEXT_IDS)
def test_sealed_frame_decode(benchmark: BenchmarkFixture, context: str, sealed: str) -> None:
    benchmark.group = f"sealed-decode-{context}"
    body = CONTEXTS[context][0]
    if sealed == "sealed":
        decoded = benchmark(sealed_read, sealed_write(body))
    else:
        decoded = benchmark(_core.decode_frame, rust_write(body))
    assert decoded.payload == body


# --- validation alone (the first step of every write) --------------------------------------

# Python can only validate by parsing into objects; the Rust validator builds nothing.
VALIDATORS: dict[str, Callable[[bytes], object]] = {
    "rust": _core.validate_json,
    "python-json": json.loads,
    "python-orjson": orjson.loads,
    "python-msgspec": msgspec.json.decode,
}


def test_validators_are_equivalent() -> None:
    bad = [b"", b"{", b'{"a":1,}', b"[1] 2", b'"\\x"', b"nul", b"01"]
    for name, validate in VALIDATORS.items():
        for body, _ in CONTEXTS.values():
            validate(body)
        for body in bad:
            with pytest.raises(REJECTS[name]):
                validate(body)


@pytest.mark.parametrize("impl", list(VALIDATORS))
@pytest.mark.parametrize("context", CONTEXT_IDS)
def test_validate(benchmark: BenchmarkFixture, context: str, impl: str) -> None:
    benchmark.group = f"validate-{context}"
    benchmark(VALIDATORS[impl], CONTEXTS[context][0])


# --- merge patch ----------------------------------------------------------------------------


def py_merge(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, recursively; dicts keep key order, new members go last."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = py_merge(target.get(key), value)
    return target


PATCHERS: dict[str, Callable[[bytes, bytes], bytes]] = {
    "rust": _core.merge_patch,
    "python-json": lambda doc, patch: compact(py_merge(json.loads(doc), json.loads(patch))),
    "python-orjson": lambda doc, patch: orjson.dumps(
        py_merge(orjson.loads(doc), orjson.loads(patch))
    ),
    "python-msgspec": lambda doc, patch: msgspec.json.encode(
        py_merge(msgspec.json.decode(doc), msgspec.json.decode(patch))
    ),
}


def test_merge_patches_are_equivalent() -> None:
    for doc, patch in CONTEXTS.values():
        results = {name: merge(doc, patch) for name, merge in PATCHERS.items()}
        assert len(set(results.values())) == 1, "every implementation writes the same bytes"
        assert json.loads(results["rust"]) != json.loads(doc)


@pytest.mark.parametrize("impl", list(PATCHERS))
@pytest.mark.parametrize("context", CONTEXT_IDS)
def test_merge_patch(benchmark: BenchmarkFixture, context: str, impl: str) -> None:
    benchmark.group = f"merge-patch-{context}"
    doc, patch = CONTEXTS[context]
    assert benchmark(PATCHERS[impl], doc, patch)


# --- partial reads: the last items of an array -----------------------------------------------

# What `GET ?path=/items&slice=-5:` does: the Rust scanner cuts the elements out of the stored
# bytes; Python parses the whole document, slices, and encodes the part again.
TRANSACTIONS = [name for name in CONTEXT_IDS if name.startswith("transaction")]
SELECTORS: dict[str, Callable[[bytes], bytes]] = {
    "rust": lambda doc: _core.select(doc, "/items", (-5, None)),
    "python-json": lambda doc: compact(json.loads(doc)["items"][-5:]),
    "python-orjson": lambda doc: orjson.dumps(orjson.loads(doc)["items"][-5:]),
    "python-msgspec": lambda doc: msgspec.json.encode(msgspec.json.decode(doc)["items"][-5:]),
}


def test_selectors_are_equivalent() -> None:
    for name in TRANSACTIONS:
        doc = CONTEXTS[name][0]
        parts = {impl: json.loads(select(doc)) for impl, select in SELECTORS.items()}
        assert all(part == json.loads(doc)["items"][-5:] for part in parts.values())


@pytest.mark.parametrize("impl", list(SELECTORS))
@pytest.mark.parametrize("context", TRANSACTIONS)
def test_select(benchmark: BenchmarkFixture, context: str, impl: str) -> None:
    benchmark.group = f"select-{context}"
    assert benchmark(SELECTORS[impl], CONTEXTS[context][0])


# --- codecs: why a frame stores lz4 ---------------------------------------------------------

# A frame's payload is lz4-compressed (lz4_flex, in the Rust writer); codec id 2 is kept for
# zstd. These measure both on chat-history JSON at three sizes: the time to encode and to
# decode, and the ratio each reaches (in extra_info), which is what the choice rests on. lz4 is
# timed through encode_frame and decode_frame, so its times include the header and the crc32;
# zstd (libzstd, through the zstandard package) with one context kept across calls, as a writer
# would keep it, and "-fresh" with a new context per call.
CODEC_PAYLOADS = {f"{size}k": compact(conversation(size * KIB)) for size in (1, 16, 256)}


class Codec(NamedTuple):
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes], bytes]
    # Bytes of the encoded form that are not the compressed payload (the frame header).
    overhead: int = 0


def _lz4_frame() -> Codec:
    return Codec(
        lambda payload: _core.encode_frame(payload, 1, NOW, NOW, 0),
        lambda frame: _core.decode_frame(frame).payload,
        _core.FRAME_HEADER_SIZE,
    )


def _zstd(level: int, *, fresh: bool) -> Codec:
    if fresh:
        return Codec(
            lambda payload: zstandard.ZstdCompressor(level=level).compress(payload),
            lambda blob: zstandard.ZstdDecompressor().decompress(blob),
        )
    return Codec(
        zstandard.ZstdCompressor(level=level).compress, zstandard.ZstdDecompressor().decompress
    )


CODECS: dict[str, Codec] = {"lz4": _lz4_frame()}
if zstandard is not None:
    for _level in (1, 3):
        CODECS[f"zstd-{_level}"] = _zstd(_level, fresh=False)
        CODECS[f"zstd-{_level}-fresh"] = _zstd(_level, fresh=True)
CODEC_IDS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(name not in CODECS, reason="zstandard is not installed"),
    )
    for name in ("lz4", "zstd-1", "zstd-1-fresh", "zstd-3", "zstd-3-fresh")
]


def codec_ratio(codec: Codec, payload: bytes, encoded: bytes) -> float:
    return round(len(payload) / (len(encoded) - codec.overhead), 2)


def test_codecs_round_trip() -> None:
    for payload in CODEC_PAYLOADS.values():
        for codec in CODECS.values():
            encoded = codec.encode(payload)
            assert codec.decode(encoded) == payload
            assert codec_ratio(codec, payload, encoded) > 1
        # Every size is past the threshold, so the lz4 side is timed compressing.
        assert _core.decode_frame(CODECS["lz4"].encode(payload)).compressed


@pytest.mark.parametrize("codec", CODEC_IDS)
@pytest.mark.parametrize("size", list(CODEC_PAYLOADS))
def test_codec_encode(benchmark: BenchmarkFixture, size: str, codec: str) -> None:
    benchmark.group = f"codec-encode-{size}"
    payload = CODEC_PAYLOADS[size]
    encoded = benchmark(CODECS[codec].encode, payload)
    benchmark.extra_info["ratio"] = codec_ratio(CODECS[codec], payload, encoded)


@pytest.mark.parametrize("codec", CODEC_IDS)
@pytest.mark.parametrize("size", list(CODEC_PAYLOADS))
def test_codec_decode(benchmark: BenchmarkFixture, size: str, codec: str) -> None:
    benchmark.group = f"codec-decode-{size}"
    payload = CODEC_PAYLOADS[size]
    encoded = CODECS[codec].encode(payload)
    assert benchmark(CODECS[codec].decode, encoded) == payload
    benchmark.extra_info["ratio"] = codec_ratio(CODECS[codec], payload, encoded)
