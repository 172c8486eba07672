"""The storage interface every backend implements, and the URL that chooses one."""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from fastctx.config import Settings

ChangeCallback = Callable[[list[str] | None], None]
"""Told the ids (`context_id`) of contexts changed elsewhere, or None if changes may be unseen."""


def context_id(tenant: str, token: str) -> str:
    """How a context is named across the process: cache keys, invalidations."""
    return f"{tenant}/{token}"


class Outcome(enum.IntEnum):
    """Result of a conditional write: the version check is part of the write, never apart."""

    MISSING = 0
    DONE = 1
    CONFLICT = -1


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRecord:
    created_at: int  # ms since the epoch
    ttl: int  # ms; every use of the session extends its life by this much
    expires_at: int  # ms since the epoch, as of the read that returned this record
    meta: bytes  # the JSON object given at creation


class Backend(abc.ABC):
    """Frames by (tenant, token), sessions by (tenant, id); all writes are atomic.

    Frames are opaque bytes to a backend except for the 8-byte version at
    `fastctx._core.VERSION_OFFSET`, which conditional writes compare byte for byte.
    """

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

    @abc.abstractmethod
    async def get(self, tenant: str, token: str) -> bytes | None: ...

    @abc.abstractmethod
    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[bytes | None]: ...

    @abc.abstractmethod
    async def insert(
        self, tenant: str, token: str, frame: bytes, expires_at: int, session: str | None
    ) -> bool:
        """Store a new context; with `session`, join it atomically. False: no such session."""

    @abc.abstractmethod
    async def swap(
        self, tenant: str, token: str, expected: bytes, frame: bytes, expires_at: int
    ) -> Outcome:
        """Replace the frame if its version bytes still equal `expected`."""

    @abc.abstractmethod
    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        """Delete the context (and its session membership) if its version equals `expected`."""

    @abc.abstractmethod
    async def session_create(
        self, tenant: str, session: str, created_at: int, ttl: int, meta: bytes
    ) -> None: ...

    @abc.abstractmethod
    async def session_touch(self, tenant: str, session: str, now: int) -> SessionRecord | None:
        """Extend the session's life by its ttl and return it; None when it does not exist."""

    @abc.abstractmethod
    async def session_members(self, tenant: str, session: str) -> list[str]:
        """Tokens of the session's contexts that still exist."""

    @abc.abstractmethod
    async def session_delete(self, tenant: str, session: str) -> list[str] | None:
        """Delete the session and every context in it; the tokens deleted, None if no session."""

    @abc.abstractmethod
    async def mcp_session_put(self, tenant: str, session: str, record: bytes, idle: int) -> None:
        """Store an MCP session's record; it expires after `idle` ms without use."""

    @abc.abstractmethod
    async def mcp_session_touch(self, tenant: str, session: str, idle: int) -> bytes | None:
        """The MCP session's record, its idle expiry pushed `idle` ms on; None when gone."""

    @abc.abstractmethod
    async def mcp_session_delete(self, tenant: str, session: str) -> bool:
        """End an MCP session; False when it did not exist."""


def open_backend(settings: Settings) -> Backend:
    """The backend named by `settings.backend` (not yet started)."""
    scheme = urlsplit(settings.backend).scheme
    if scheme == "memory":
        from fastctx.backends.memory import MemoryBackend

        return MemoryBackend()
    if scheme in ("redis", "rediss", "unix"):
        from fastctx.backends.redis import RedisBackend

        return RedisBackend(settings.backend, timeout=settings.backend_timeout)
    raise ValueError(
        f"unsupported backend URL {settings.backend!r}: use memory://, redis://host:port/db "
        "or rediss://host:port/db"
    )
