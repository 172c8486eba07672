"""The Context Serializer and the in-process cache, implemented in Rust (`rust_core/`).

All timestamps are integer milliseconds since the Unix epoch; an `expires_at` of 0 means never.
"""

from typing import Self, final

__all__ = [
    "COMPRESS_THRESHOLD",
    "FRAME_HEADER_SIZE",
    "ROPE_MIN_BYTES",
    "UPDATED_AT_OFFSET",
    "VERSION_OFFSET",
    "Cache",
    "Document",
    "Frame",
    "FrameError",
    "JsonError",
    "Keyring",
    "LogEntry",
    "PatchError",
    "PatchTestFailed",
    "PathNotFound",
    "SelectError",
    "apply_patches",
    "decode_frame",
    "encode_frame",
    "frame_version",
    "is_token",
    "json_patch",
    "log_entries",
    "merge_as_json_patch",
    "merge_patch",
    "new_token",
    "patched",
    "sealed_key_id",
    "select",
    "validate_json",
]

__version__: str
"""The package version, from `rust_core/Cargo.toml`."""

class FrameError(ValueError):
    """A stored frame is truncated, corrupted or of an unknown format."""

class JsonError(ValueError):
    """The input is not one valid JSON value in UTF-8 (or nests deeper than 127 levels)."""

class PatchError(ValueError):
    """A patch document is invalid, or cannot be applied to the document."""

class PatchTestFailed(PatchError):
    """A JSON Patch `test` operation found a different value, or no value, at its path."""

class PathNotFound(LookupError):
    """A JSON Pointer names no value in the document."""

class SelectError(ValueError):
    """A JSON Pointer is malformed, or a slice is asked of a value that is not an array."""

# tokens

def new_token() -> str:
    """Return a new token: 128 bits from the OS CSPRNG, base62 (0-9A-Za-z), always 22 characters.

    Raises OSError if the OS random source fails.
    """

def is_token(value: str) -> bool:
    """Tell whether `value` is exactly 22 characters of [0-9A-Za-z] encoding a number < 2**128."""

# JSON

def validate_json(data: bytes) -> None:
    """Raise JsonError unless `data` is one JSON value in UTF-8, with only whitespace around it.

    Strings are fully decoded (invalid escapes and lone surrogates are errors); nesting deeper
    than 127 arrays/objects is an error. Large inputs are checked with the GIL released.
    """

def select(
    document: bytes | Document,
    pointer: str,
    slice: tuple[int | None, int | None] | None = None,
) -> bytes:
    """Return the value the RFC 6901 JSON Pointer `pointer` names in `document`, as written there.

    The document is walked as raw bytes (no value is built) and checked whole. The result is
    the value's own bytes, byte for byte (the whole document's without the whitespace around
    it for ""). A key the document repeats names its last value, as json.loads has it. Array
    tokens are digits without a leading zero; "-" names nothing.

    With `slice` (start, end), the value there must be an array; the result is `[`, the bytes
    of the elements `array[start:end]` chooses (Python's rules: negative counts from the end,
    None is the open side, bounds out of range are clamped) joined by `,`, then `]`.

    Raises SelectError for a malformed pointer or a slice of anything but an array;
    PathNotFound when the pointer names nothing (the message says where the way ends);
    JsonError if the document is not JSON. Large documents are walked with the GIL released.

    A Document is read without making its bytes where the pointer names its array (a slice
    costs what it returns), a place inside it, or a place beside it.
    """

# frames

FRAME_HEADER_SIZE: int
"""Header size of a frame without a session (49); a session adds its length in bytes."""

VERSION_OFFSET: int
"""Byte offset of the 8-byte little-endian context version in a frame (4)."""

UPDATED_AT_OFFSET: int
"""Byte offset of the 8-byte little-endian updated_at in a frame (20).

From frame format 2 on, the version and updated_at are outside the checksum, so that they can
be moved forward in place when a patch is appended to the context's log.
"""

COMPRESS_THRESHOLD: int
"""Payloads of at least this many bytes are lz4-compressed, when that makes them smaller."""

def encode_frame(
    payload: bytes,
    version: int,
    created_at: int,
    updated_at: int,
    expires_at: int,
    session: str | None = None,
    keyring: Keyring | None = None,
    aad: bytes | None = None,
) -> bytes:
    """Build a stored frame: a versioned header with a crc32, then the payload.

    The payload is stored as given (it is not validated) and compressed from
    COMPRESS_THRESHOLD bytes on; with `keyring`, what is stored of it is sealed under the
    ring's first key, bound to `aad` (the header stays in the clear). Integers must fit in 64
    bits unsigned (OverflowError otherwise). Raises ValueError for a payload over 64 MiB or a
    session id that is empty, not ASCII or longer than 255 bytes.
    """

@final
class LogEntry:
    """One entry of a context's patch log. Immutable."""

    @property
    def version(self) -> int:
        """The version its patch made."""

    @property
    def updated_at(self) -> int:
        """When it was written (ms)."""

    @property
    def patch(self) -> bytes:
        """The JSON Patch, as stored (base64 text when sealed)."""

def log_entries(data: bytes, offset: int = 0) -> list[LogEntry]:
    """The entries of a patch log from `offset` on; ValueError when one is cut short."""

@final
class Frame:
    """A decoded frame: the context's metadata and its JSON payload. Immutable."""

    @property
    def version(self) -> int:
        """The context version."""

    @property
    def created_at(self) -> int:
        """When the context was created (ms)."""

    @property
    def updated_at(self) -> int:
        """When the context was last written (ms)."""

    @property
    def expires_at(self) -> int:
        """When the context expires (ms); 0 = never."""

    @property
    def session(self) -> str | None:
        """The session the context belongs to, if any."""

    @property
    def payload(self) -> bytes:
        """The JSON bytes, decompressed, exactly as given to encode_frame."""

    @property
    def size(self) -> int:
        """len(payload)."""

    @property
    def stored_size(self) -> int:
        """len(frame): the bytes the frame takes in storage."""

    @property
    def compressed(self) -> bool:
        """Whether the payload is stored compressed."""

    @property
    def key_id(self) -> str | None:
        """The id of the key a sealed frame was sealed with; None for a frame in the clear."""

def decode_frame(frame: bytes, keyring: Keyring | None = None, aad: bytes | None = None) -> Frame:
    """Decode and verify a frame (magic, format, flags, lengths, crc32, decompression),
    opening a sealed one with `keyring` and the `aad` it was sealed with.

    Raises FrameError on anything wrong (a sealed frame without its ring or with other
    associated data included); never reads or allocates past sane bounds.
    """

def frame_version(frame: bytes) -> int:
    """Return the context version from the header alone.

    Checks the magic, format, flags and that the length matches the header (FrameError
    otherwise), but not the crc32: use decode_frame to verify the payload.
    """

# patches

def merge_patch(document: bytes, patch: bytes) -> bytes:
    """Apply an RFC 7386 JSON merge patch; return the result as compact JSON bytes.

    Object members keep their order (new ones are appended in the patch's order). Members the
    patch does not touch, and the patch's own values, are copied as written (numbers and string
    escapes keep their spelling), without insignificant whitespace. A key repeated in the
    document is patched at each occurrence; in the patch, its last value counts. Raises
    JsonError if either input is not JSON (the whole document is checked) or nests deeper
    than 127 levels.
    """

def json_patch(document: bytes, patch: bytes) -> bytes:
    """Apply an RFC 6902 JSON Patch atomically; return the result as compact JSON bytes.

    Supports add, remove, replace, move, copy and test (deep equality, numbers by value).
    Raises JsonError if either input is not JSON; PatchError if the patch is not an array
    of valid operations (unknown op, missing or repeated member, bad JSON Pointer) or an
    operation cannot be applied (missing path, index out of bounds, move into its own
    child, removing the root, a result deeper than 127 levels, copies growing the document
    past its inputs' size + 1 MiB); PatchTestFailed if a `test` operation fails.
    """

def merge_as_json_patch(document: bytes, patch: bytes) -> tuple[bytes, bytes]:
    """Restate an RFC 7386 merge patch as the RFC 6902 JSON Patch making the same change.

    Returns (json_patch, result): the JSON Patch, and `document` with it applied, both as
    compact JSON; the result is the one `apply_patches(document, [json_patch])` gives.
    Raises JsonError if either input is not JSON; PatchError if the result would nest deeper
    than 127 levels.
    """

# documents that grow at the end of an array

ROPE_MIN_BYTES: int
"""Documents of at least this many bytes keep the items appended to them apart (a Document)."""

@final
class Document:
    """A document as base JSON bytes and the items appended to one of its arrays since.

    Made by `patched` and `apply_patches` for documents of ROPE_MIN_BYTES or more, so that an
    append, and a read of that array's elements (`select`), cost what they append and read.
    Its bytes are made once, when asked for. Immutable.
    """

    def __len__(self) -> int:
        """The length of its JSON bytes."""

    def bytes(self) -> bytes:
        """Its JSON bytes: the base, with the items spliced in before the array's bracket."""

def patched(document: bytes | Document, patch: bytes) -> bytes | Document:
    """Apply an RFC 6902 JSON Patch, as a write does.

    A patch that only appends to one array (`add` at `<array>/-`, every operation), where an
    array is, is spliced into the document's bytes without parsing them: each item written
    compactly, the rest of the document as it was. From ROPE_MIN_BYTES on, the result is a
    Document that keeps the items apart. Any other patch is applied to the parsed document,
    written compactly as json_patch writes it. Raises as json_patch does.
    """

def apply_patches(document: bytes | Document, patches: list[bytes]) -> bytes | Document:
    """Apply the JSON Patches of a context's log in order, each as `patched` would.

    The result is the one applying them one by one with `patched` gives, byte for byte, so
    every node makes the same bytes of a version; the document is parsed (and written) once
    for a run of patches that are not appends. `copy` operations are not bounded (each patch
    was checked as it was written). Raises as json_patch does, the message naming the patch
    ("patch 2: ..."); `document` itself when `patches` is empty.
    """

# cache

@final
class Cache:
    """In-process cache of context payloads: LRU, bounded by bytes, with per-entry expiry.

    Thread-safe. An entry costs len(payload) + len(key) + 128 bytes. Stores the payload
    object itself: get returns the very bytes object that was put.
    """

    def __new__(cls, max_bytes: int) -> Self:
        """Create an empty cache whose entries take at most `max_bytes` in all."""

    @property
    def max_bytes(self) -> int:
        """The most bytes the entries may take."""

    @property
    def bytes_used(self) -> int:
        """The bytes the entries take now."""

    @property
    def hits(self) -> int:
        """Lookups that found a live entry."""

    @property
    def misses(self) -> int:
        """Lookups that found nothing, or an expired entry."""

    @property
    def evictions(self) -> int:
        """Entries removed to make room for others."""

    def __len__(self) -> int:
        """The number of entries (expired ones included until looked up)."""

    def get(self, key: str) -> tuple[bytes | Document, int, int, int] | None:
        """Return (payload, version, expires_at, cached_at) for a live entry, else None.

        An entry whose expires_at has passed is removed. Counts a hit or a miss; a hit
        makes the entry the most recently used.
        """

    def peek(self, key: str) -> tuple[bytes | Document, int, int, int, object | None] | None:
        """Return (payload, version, expires_at, cached_at, extra) for a live entry, else None.

        Not counted as a hit or a miss, and the entry keeps its place in the LRU order.
        """

    def put(
        self,
        key: str,
        payload: bytes | Document,
        version: int,
        expires_at: int,
        extra: object = None,
    ) -> None:
        """Cache `payload` for `key` at `version`, with cached_at = now.

        Does nothing if a live entry with a newer version is cached. Otherwise replaces any
        entry for `key`; an entry larger than max_bytes, or already expired, is not kept.
        Evicts least recently used entries to make room. `extra` (a small object, not counted
        in the entry's bytes) is kept with the entry and handed back by peek.
        """

    def outdate(self, key: str) -> bool:
        """Mark the entry for `key` as cached at time 0, keeping it; True if there was one.

        For an entry a newer version has replaced elsewhere: it is no longer served as fresh,
        but can still be brought up to date, or served as stale while the backend is down.
        """

    def invalidate(self, key: str) -> bool:
        """Drop the entry for `key`; return True if there was one."""

    def clear(self) -> None:
        """Drop every entry; the counters keep counting."""

# seal

@final
class Keyring:
    """Named AES-256-GCM keys (RustCrypto's aes-gcm): the first seals, every one opens.

    A sealed value is b"FE", format 1, the key id, a random 96-bit nonce, the ciphertext and
    its 16-byte tag; it opens only with the associated data it was sealed with.
    """

    def __new__(cls, keys: list[tuple[str, bytes]]) -> Self:
        """A ring of (id, 32-byte key) pairs; ValueError for none, a bad id or length, or an
        id given twice."""

    @property
    def primary(self) -> str:
        """The id of the key that seals."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """`plaintext` sealed under the first key, bound to `aad`."""

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """What `sealed` holds; FrameError when its key is not in the ring, or it was altered
        or sealed with other associated data."""

def sealed_key_id(value: bytes) -> str | None:
    """The key id a sealed value names; None for bytes that are not a sealed value."""
