"""The storage interfaces (contexts, sessions, change log, MCP state), a backend that composes
them, and the URL that chooses one."""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import AsyncIterator, Callable, Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

from fastctx import _core
from fastctx.backends.keys import (
    context_id,
    context_id_of,
    context_stream,
    mcp_stream,
    session_stream,
)
from fastctx.config import Settings

__all__ = [
    "Backend",
    "ChangeCallback",
    "ChangeLog",
    "Contexts",
    "Event",
    "Health",
    "McpState",
    "Outcome",
    "SessionRecord",
    "Sessions",
    "Since",
    "Stored",
    "StreamEvent",
    "context_id",
    "context_stream",
    "event_order",
    "invalidations",
    "mcp_stream",
    "open_backend",
    "session_stream",
]

ChangeCallback = Callable[[list[str] | None], None]
"""Told the ids (`context_id`) of contexts changed elsewhere, or None if changes may be unseen."""


Event = tuple[str, dict[str, str]]
"""A change stream entry: its id ("<ms>-<seq>", the SSE id) and its fields (type, version,
token, session)."""

StreamEvent = tuple[str, Event]
"""An event and the stream it belongs to."""

# Every stream keeps at least its last EVENTS_KEPT events and every event younger than
# EVENTS_MAX_AGE_MS; trimming waits until both bounds are passed by a margin, so that it is
# rare enough to cost nothing per write.
EVENTS_KEPT = 1000
EVENTS_MAX_AGE_MS = 3_600_000
TRIM_LENGTH = 2 * EVENTS_KEPT
TRIM_AGE_MS = EVENTS_MAX_AGE_MS + 600_000
# An `updated` event carries the JSON Patch that made it up to this size; a larger one (as
# every PUT) is left to be read from the context (see fastctx.http.events).
EVENT_PATCH_MAX_BYTES = 64 * 1024
# The frame's version bytes as GETRANGE names them (first and last byte, inclusive).
VERSION_RANGE = (_core.VERSION_OFFSET, _core.VERSION_OFFSET + 7)


def invalidations(on_change: ChangeCallback) -> Callable[[list[bytes] | None], None]:
    """What a Redis connection hears of invalidated context keys, told to `on_change` as the
    contexts' ids (None, as it comes, when changes may have gone unheard)."""

    def invalidated(keys: list[bytes] | None) -> None:
        on_change(None if keys is None else [context_id_of(key) for key in keys])

    return invalidated


def event_order(event_id: str) -> tuple[int, int]:
    """An event id as a sortable pair; ValueError when it is not "<ms>-<seq>"."""
    ms, dash, seq = event_id.partition("-")
    if not (ms.isdigit() and (not dash or seq.isdigit())) or len(event_id) > 41:
        raise ValueError(f"not an event id: {event_id!r}")
    order = int(ms), int(seq or 0)
    if max(order) >= 2**64:  # Redis refuses such ids outright
        raise ValueError(f"not an event id: {event_id!r}")
    return order


class Outcome(enum.IntEnum):
    """Result of a conditional write: the version check is part of the write, never apart."""

    MISSING = 0
    DONE = 1
    CONFLICT = -1
    #: An append found a frame of format 1, which cannot move its version in place: the
    #: context must be written whole (`swap`) once.
    REBASE = -2


class Stored(NamedTuple):
    """A context as stored: its frame, and its patch log (b"" when it has none)."""

    frame: bytes
    log: bytes


class Since(NamedTuple):
    """What `Contexts.catch_up` found: the log's bytes from the offset asked (`tail`: the
    entries written since, b"" when nothing is newer) or, when the log no longer starts from
    the base the caller knows, the whole context (`stored`)."""

    tail: bytes
    stored: Stored | None


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRecord:
    created_at: int  # ms since the epoch
    ttl: int  # ms; every use of the session extends its life by this much
    expires_at: int  # ms since the epoch, as of the read that returned this record
    meta: bytes  # the JSON object given at creation


@dataclasses.dataclass(frozen=True, slots=True)
class Health:
    """What a backend says of its connections, for /metrics."""

    circuit_open: bool  # calls fail fast after repeated failures
    circuit_opened: int  # times the circuit breaker has opened


class Contexts(abc.ABC):
    """Contexts by (tenant, token): a frame and a patch log (`fastctx.backends.patchlog`).
    Every write is atomic, and appends its change event (to the context's stream and, for a
    context in a session, to the session's) in the same step.

    Frames are opaque bytes to a backend except for the 8-byte version at
    `fastctx._core.VERSION_OFFSET`, which conditional writes compare byte for byte, and, for
    an append, the 24 bytes from there on and the format byte (2). Logs are opaque but for
    their header's base version.
    """

    @abc.abstractmethod
    async def get(self, tenant: str, token: str) -> bytes | None:
        """The frame alone: the context's metadata and newest version (not its document)."""

    @abc.abstractmethod
    async def version(self, tenant: str, token: str) -> int | None:
        """The newest version alone (the frame's 8 version bytes, `VERSION_RANGE`); None when
        the context is gone."""

    @abc.abstractmethod
    async def load(self, tenant: str, token: str) -> Stored | None:
        """The frame and the log, read together."""

    async def load_relaxed(self, tenant: str, token: str) -> Stored | None:
        """As `load`, for a read the cache would have answered had it held the context: it
        may come from a replica, as old as its replication lag (see the cluster backend)."""
        return await self.load(tenant, token)

    @abc.abstractmethod
    async def load_many(self, tenant: str, tokens: Sequence[str]) -> list[Stored | None]: ...

    @abc.abstractmethod
    async def catch_up(
        self, tenant: str, token: str, version: int, base: int, offset: int
    ) -> Since | None:
        """What is newer than `version`, for a caller whose copy was made from a log of base
        version `base` that was `offset` bytes long; None when the context is gone."""

    @abc.abstractmethod
    async def append(
        self,
        tenant: str,
        token: str,
        head: bytes,
        session: str | None,
        patches: Sequence[bytes],
    ) -> tuple[Outcome, int]:
        """Append `patches` to the log, the last as the entry of the version `head` names and
        each before it of the version before (creating the log from the frame's base if it
        has none), and write `head` (version, created_at, updated_at) into the frame, if the
        frame is still at the version before the first: all of them, atomically, or none.
        With DONE, the log's new length. Each version's change event carries its patch up to
        EVENT_PATCH_MAX_BYTES."""

    @abc.abstractmethod
    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[bytes | None]:
        """The frames alone, in order (None where there is none)."""

    @abc.abstractmethod
    async def insert(
        self, tenant: str, token: str, frame: bytes, expires_at: int, session: str | None
    ) -> bool:
        """Store a new context; with `session`, join it atomically. False: no such session."""

    @abc.abstractmethod
    async def swap(
        self,
        tenant: str,
        token: str,
        expected: bytes,
        frame: bytes,
        expires_at: int,
        session: str | None = None,
        log: bytes = b"",
        patch: bytes = b"",
    ) -> Outcome:
        """Replace the frame, and the log with `log` (none when empty), if the frame's version
        bytes still equal `expected`. `patch`, when not empty, goes with the change event."""

    @abc.abstractmethod
    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        """Delete the context (and its session membership) if its version equals `expected`."""

    @abc.abstractmethod
    async def reseal(self, tenant: str, token: str, expected: bytes, frame: bytes) -> Outcome:
        """Replace the frame, and drop the log, if the version is still `expected`: the same
        version written again (under another key, `fastctx rekey`), so no event and no new
        expiry."""

    @abc.abstractmethod
    def tokens(self) -> AsyncIterator[tuple[str, str]]:
        """Every stored context, (tenant, token), each at least once (a scan: some may be
        seen twice, and ones written meanwhile may be missed)."""


class Sessions(abc.ABC):
    """Sessions by (tenant, id): a record with a sliding TTL, and the contexts created in it."""

    @abc.abstractmethod
    async def create(
        self, tenant: str, session: str, created_at: int, ttl: int, meta: bytes
    ) -> None: ...

    @abc.abstractmethod
    async def touch(self, tenant: str, session: str, now: int) -> SessionRecord | None:
        """Extend the session's life by its ttl and return it; None when it does not exist."""

    @abc.abstractmethod
    async def members(self, tenant: str, session: str) -> list[str]:
        """Tokens of the session's contexts that still exist."""

    @abc.abstractmethod
    def metas(self) -> AsyncIterator[tuple[str, str, bytes]]:
        """Every stored session, (tenant, session, meta as stored), by a scan as
        `Contexts.tokens` is."""

    @abc.abstractmethod
    async def replace_meta(self, tenant: str, session: str, old: bytes, new: bytes) -> bool:
        """Store `new` as the session's meta if it is still `old` (its life unchanged)."""

    @abc.abstractmethod
    async def delete(self, tenant: str, session: str) -> list[str] | None:
        """Delete the session and every context in it; the tokens deleted, None if no session."""


class ChangeLog(abc.ABC):
    """The change streams (`fastctx.backends.keys`: a context's, a session's, an MCP
    session's), which the writes of the other parts append to."""

    @abc.abstractmethod
    async def since(self, stream: str, after: str) -> list[Event]:
        """The retained events of `stream` after the id `after`, oldest first."""

    @abc.abstractmethod
    async def last_id(self, stream: str) -> str:
        """The id of the newest event of `stream`; "0-0" when it has none."""

    @abc.abstractmethod
    async def wait(self, cursors: dict[str, str], timeout_ms: int) -> list[StreamEvent]:
        """(stream, event) for events after each stream's cursor; waits up to `timeout_ms`
        for the first one, or until `interrupt`."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """End a pending `wait` early: the streams to wait on have changed."""


class McpState(abc.ABC):
    """MCP sessions (the protocol's own) by (tenant, id): a record that expires when idle,
    and the session's subscriptions: token -> cursor, the id of the last event of the
    context's stream that its notification stream (`mcp_stream`) has accounted for."""

    @abc.abstractmethod
    async def put(self, tenant: str, session: str, record: bytes, idle: int) -> None:
        """Store an MCP session's record; it expires after `idle` ms without use."""

    @abc.abstractmethod
    async def touch(self, tenant: str, session: str, idle: int) -> bytes | None:
        """The MCP session's record, its idle expiry pushed `idle` ms on; None when gone."""

    @abc.abstractmethod
    async def delete(self, tenant: str, session: str) -> bool:
        """End an MCP session (with its subscriptions); False when it did not exist."""

    @abc.abstractmethod
    async def subscribe(
        self, tenant: str, session: str, token: str, cursor: str, record: bytes, idle: int
    ) -> bool:
        """Subscribe the session to a context from `cursor` on (kept if it already is), noted
        in its notification stream as a `subscribe` event, and replace the session's record
        (`put`, but never bringing an ended session back); False when it is gone.
        """

    @abc.abstractmethod
    async def unsubscribe(self, tenant: str, session: str, token: str) -> bool:
        """Drop a subscription, noted as an `unsubscribe` event; False when there was none."""

    @abc.abstractmethod
    async def subscriptions(self, tenant: str, session: str) -> dict[str, str]:
        """The session's subscriptions: token -> cursor."""

    @abc.abstractmethod
    async def notify(
        self,
        tenant: str,
        session: str,
        token: str,
        expected: str,
        cursor: str,
        kind: str,
        version: str,
        idle: int,
    ) -> str | None:
        """If the subscription's cursor is still `expected`, append one (kind, version, token)
        event to the notification stream and move the cursor to `cursor`, atomically.

        Returns the cursor as it now is (`cursor` when this call appended), or None when the
        session is not subscribed to the context."""

    @abc.abstractmethod
    async def keep(self, tenant: str, session: str, idle: int) -> None:
        """Keep the session's subscriptions and notification stream for `idle` ms more."""


class Quotas(abc.ABC):
    """What each tenant may use, shared by every node: its request budget, a token bucket
    (FASTCTX_TENANT_RATE), and the bytes its contexts keep (FASTCTX_TENANT_BYTES)."""

    @abc.abstractmethod
    async def keep(
        self, tenant: str, quota: int, kept: Sequence[tuple[str, int, int]], now: int
    ) -> tuple[bool, int]:
        """Count each (token, bytes, expires_at) of `kept` as keeping that many bytes until it
        expires (0 bytes: the context is gone), unless together they add bytes and that would
        take the tenant past `quota`: (whether they were counted, the tenant's bytes after).
        Contexts whose expiry is past `now` are no longer counted."""

    @abc.abstractmethod
    async def take(self, tenant: str, want: int, rate: int, burst: int) -> tuple[int, int]:
        """Take up to `want` tokens from the tenant's bucket, which holds at most `burst` and
        fills with `rate` a second: (the tokens granted, the ms until the next one when fewer
        than `want` were)."""


class Backend(abc.ABC):
    """A store made of five parts, each an attribute (one lookup on every call, no wrapper):
    `contexts`, `sessions`, `changes` (the change log), `mcp` (MCP session state) and
    `quotas`; the backend itself opens and closes their connections and reports on them."""

    contexts: Contexts
    sessions: Sessions
    changes: ChangeLog
    mcp: McpState
    quotas: Quotas

    #: True when the backend lives in this process, so a local cache would only duplicate it.
    in_process: bool = False

    @property
    def coherent(self) -> bool:
        """True while every change made by another process reaches the `watch` callback."""
        return self.in_process

    def watch(self, on_change: ChangeCallback) -> None:  # noqa: B027 - optional hook
        """Report contexts changed by other processes (an in-process backend has none)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections or start housekeeping; called once before serving."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything `start` took."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the backend answers; raise `BackendError` otherwise."""

    def health(self) -> Health | None:
        """The state of its circuit breaker; None for a backend that has none."""
        return None


def open_backend(settings: Settings) -> Backend:
    """The backend named by `settings.backend` (not yet started)."""
    scheme = urlsplit(settings.backend).scheme
    if scheme == "memory":
        from fastctx.backends.memory import MemoryBackend

        return MemoryBackend()
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        from fastctx.backends.cluster import ClusterBackend
        from fastctx.backends.redis import RedisBackend

        kind = ClusterBackend if scheme.endswith("+cluster") else RedisBackend
        return kind(
            settings.backend,
            timeout=settings.backend_timeout,
            breaker_failures=settings.breaker_failures,
            breaker_reset=settings.breaker_reset,
            write_replicas=settings.write_replicas,
        )
    raise ValueError(
        f"unsupported backend URL {settings.backend!r}: use memory://, redis://host:port/db, "
        "rediss://host:port/db or redis+cluster://host:port,host:port,..."
    )
