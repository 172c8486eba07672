"""A context's patch log: the JSON Patches written since its base document, oldest first.

A context is stored as its frame (whose payload is the base document, and whose header holds
the newest version) and, once it has been patched, a log beside it (`keys.log_key`), one
string that Redis appends to:

    header  3 bytes b"FL" + format 1, then the base version (u64), the version of the frame's
            payload; the entries follow, one per version from base + 1 on
    entry   u32 patch length, u64 version, u64 updated_at (ms), then the RFC 6902 patch

All integers little endian. A reader that holds version N of a context and knows the log's
base version and its length at N reads only what was appended since (`Contexts.catch_up`).
"""

from __future__ import annotations

import struct

from fastctx import _core
from fastctx.errors import BackendError

MAGIC = b"FL\x01"
_HEADER = struct.Struct("<3sQ")
_ENTRY = struct.Struct("<IQQ")
HEADER_SIZE = _HEADER.size
#: What an entry takes besides its patch.
ENTRY_SIZE = _ENTRY.size

# When a write folds the log into a new base (see fold_at): the log has outgrown both its
# base (FOLD_RATIO times) and FOLD_MIN_BYTES, or holds more than MAX_ENTRIES patches. A fold
# keeps the last KEPT_VERSIONS patches in the log, so that the versions they made stay
# readable (`?version=N`). The ratio bounds what Redis holds of a context to (1 + ratio) times
# its base, and makes the fold's cost (writing the base again) at most 1/ratio of the bytes
# the patches since the last fold moved.
FOLD_RATIO = 2
FOLD_MIN_BYTES = 64 * 1024
MAX_ENTRIES = 16_384
KEPT_VERSIONS = 16


# One entry: `.version`, `.updated_at` and `.patch` (as stored), cut out in Rust.
Entry = _core.LogEntry


def header(base_version: int) -> bytes:
    return _HEADER.pack(MAGIC, base_version)


def entry(version: int, updated_at: int, patch: bytes) -> bytes:
    return _ENTRY.pack(len(patch), version, updated_at) + patch


def base_version(log: bytes) -> int:
    """The version of the base document `log` starts from."""
    if len(log) < HEADER_SIZE or log[:3] != MAGIC:
        raise BackendError("a context's patch log is corrupted: bad header")
    version: int = _HEADER.unpack_from(log)[1]
    return version


def entries(data: bytes, offset: int = 0) -> list[Entry]:
    """The entries of `data` from `offset` on (a whole log: from HEADER_SIZE)."""
    try:
        return _core.log_entries(data, offset)
    except ValueError as exc:
        raise BackendError(f"a context's patch log is corrupted: {exc}") from None


def encode(base: int, kept: list[Entry]) -> bytes:
    """A whole log: `kept` after a header naming `base`."""
    return header(base) + b"".join(entry(e.version, e.updated_at, e.patch) for e in kept)


def fold_at(base_size: int, log_size: int, count: int) -> bool:
    """Whether a log of `count` entries in `log_size` bytes, over a base of `base_size`
    bytes, is folded into a new base by the next write."""
    if count > MAX_ENTRIES:
        return True
    return count > KEPT_VERSIONS and log_size > max(FOLD_MIN_BYTES, FOLD_RATIO * base_size)
