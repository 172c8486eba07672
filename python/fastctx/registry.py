"""The Context Registry: create, read, replace, patch and delete contexts by token."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple, TypeVar, cast

import msgspec

from fastctx import _core
from fastctx.backends import EVENT_PATCH_MAX_BYTES, Backend, Outcome, Stored, context_id, patchlog
from fastctx.clock import now_ms
from fastctx.config import Settings
from fastctx.deltas import (
    Current,
    Document,
    Extra,
    append_patch,
    caught_up,
    check_sequence,
    document_bytes,
    materialize,
    opened,
)
from fastctx.errors import (
    BackendError,
    InvalidPatch,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    VersionConflict,
    VersionGone,
)
from fastctx.quotas import StorageQuotas
from fastctx.sealing import Sealing, key_id

T = TypeVar("T")
CacheState = Literal["hit", "miss", "stale"]
PatchKind = Literal["merge", "json"]

# A write that loses the version race re-reads and tries again; writers on this node queue on a
# per-context lock first, so only writers on other nodes can make it lose.
MAX_WRITE_ATTEMPTS = 32
MAX_TTL_SECONDS = 10 * 365 * 86400
# How long a cached entry may be served when the backend does not report changes made by other
# nodes (e.g. Redis without CLIENT TRACKING): the bound on how stale a read may be.
UNTRACKED_MAX_AGE_MS = 50
_OPERATION = re.compile(r"^operation \d+: ")
# What one append may take besides its own writer's patch: queued writers beyond these wait for
# the next turn, so that no script holds Redis up for long.
BATCH_MAX_PATCHES = 64
BATCH_MAX_BYTES = 1024 * 1024
# What an append moves forward in the frame's header: version, created_at, updated_at.
_HEAD = struct.Struct("<QQQ")


# What the registry returns: msgspec Structs, which cost a fifth of a frozen dataclass to make
# (0.07 against 0.42 us), on every request.
class Created(msgspec.Struct, frozen=True):
    token: str
    version: int
    expires_at: int


class Read(msgspec.Struct, frozen=True):
    payload: Document  # see document_bytes
    version: int
    cache: CacheState


class Meta(msgspec.Struct, frozen=True):
    token: str
    version: int
    size: int
    stored_size: int
    created_at: int
    updated_at: int
    expires_at: int
    session: str | None
    oldest_version: int


Change = Callable[[Document], tuple[Document, bytes | None]]
"""What a write makes of the document: (the new document, the JSON Patch that made it) for a
change appended to the log, or (the new document, None) for one stored whole."""


class _Job(NamedTuple):
    """A patch waiting for its key's turn, which the writer ahead of it may write for it, in
    the same append as its own (see Registry._append)."""

    change: Change
    if_version: int | None


class _Batch:
    """What one append writes: the patches, the writer's own first, then the jobs it took; the
    document and the log's size they make; and the answers to give those jobs' writers (the
    version each was written as, or the error its change raised) once it is written."""

    __slots__ = ("answers", "document", "log_size", "patches")

    def __init__(self, patch: bytes, document: Document, log_size: int) -> None:
        self.patches = [patch]
        self.document = document
        self.log_size = log_size
        self.answers: list[tuple[asyncio.Future[Any], int | Exception]] = []

    def again(self) -> None:
        """Not written: its jobs' writers queue again, to write in a turn of their own."""
        for waiter, _ in self.answers:
            if not waiter.done():
                waiter.set_result(_AGAIN)


class _Fills:
    """What this node is reading or writing at the backend, by key, to put in its cache.

    A fill's answer is put in the cache when its task resumes, while a change report is taken
    the moment it comes in: a report of a later change that came in between would be lost
    under a copy put in as fresh. So the reports of a key are counted while fills of it are
    out, and a fill that saw more than its own is cached outdated (`Registry._remember`): the
    next read catches it up, one round trip. A write has one report of its own: Redis and
    Valkey tell the connection that ran a script of the keys it wrote (NOLOOP spares only
    plain commands), right after its reply; and a write that waits for replicas runs on a
    connection of its own, so the tracking one hears of it as of any other.
    """

    __slots__ = ("_lost", "_out", "_reported")

    def __init__(self) -> None:
        self._out: dict[str, int] = {}  # fills out, by key
        self._reported: dict[str, int] = {}  # reports of a key while fills of it were out
        self._lost: set[str] = set()  # out when changes may have gone unreported

    def begin(self, key: str) -> int:
        """A fill of `key` goes out; what `overtaken` counts its reports from."""
        self._out[key] = self._out.get(key, 0) + 1
        return self._reported.get(key, 0)

    def end(self, key: str) -> None:
        left = self._out[key] - 1
        if left:
            self._out[key] = left
        else:
            del self._out[key]
            self._reported.pop(key, None)
            self._lost.discard(key)

    def report(self, key: str) -> None:
        if key in self._out:
            self._reported[key] = self._reported.get(key, 0) + 1

    def report_all(self) -> None:
        self._lost.update(self._out)

    def overtaken(self, key: str, began: int, own: int) -> bool:
        """Whether `key` was reported changed more than `own` times since `begin` told `began`."""
        return self._reported.get(key, 0) - began > own or key in self._lost


# What `_KeyedLocks.wait` returns besides the version a job was written as: the key is the
# waiter's now; or the writer that took its job could not write it, so it must queue again.
_TURN: Any = object()
_AGAIN: Any = object()


class _KeyedLocks:
    """Writers of one key on this node take turns, in the order they came.

    The first writer of a key takes it at once, for two dict operations; each later one waits
    on a future of its own until the writer before it hands the turn on. (An asyncio.Lock made
    per key cost a microsecond on every write, and most writes find nobody else there.) A
    waiter may leave a job: the writer holding the key may then take it (`joining`, `join`)
    and answer the waiter's future with the version it was written as, or with its error.
    """

    def __init__(self) -> None:
        # A key is here while a writer holds it, with the writers waiting for it: each its
        # future, and its job, if it left one.
        self._waiting: dict[str, deque[tuple[asyncio.Future[Any], _Job | None]]] = {}

    def take(self, key: str) -> bool:
        """Take the key if nobody holds it; False if `wait` must be awaited instead."""
        if key in self._waiting:
            return False
        self._waiting[key] = deque()
        return True

    async def wait(self, key: str, job: _Job | None = None) -> Any:
        """Wait for the key's turn, which `release` hands on; await it right after `take` said
        no, with nothing awaited in between (so the key is held). Returns `_TURN` when the key
        is held by the caller now, else what became of `job`: the version it was written as,
        or `_AGAIN`; the job's error is raised."""
        waiting = self._waiting[key]
        turn = asyncio.get_running_loop().create_future()
        waiting.append((turn, job))
        try:
            return await turn
        except asyncio.CancelledError:
            if not turn.done():  # not passed over by `release`, nor joined, yet
                with contextlib.suppress(ValueError):
                    waiting.remove((turn, job))
            elif not turn.cancelled() and turn.exception() is None and turn.result() is _TURN:
                self.release(key)  # handed the turn as it was cancelled: hand it on
            raise

    def joining(self, key: str) -> _Job | None:
        """The job of the writer first in line for `key` (held by the caller), if it left one."""
        waiting = self._waiting[key]
        while waiting:
            turn, job = waiting[0]
            if not turn.done():
                return job
            waiting.popleft()  # cancelled: passed over
        return None

    def join(self, key: str) -> asyncio.Future[Any]:
        """Take the job `joining` gave out of line; its waiter's future, to answer."""
        return self._waiting[key].popleft()[0]

    def release(self, key: str) -> None:
        """Hand the key to the writer that has waited longest, or free it."""
        waiting = self._waiting[key]
        while waiting:
            turn, _ = waiting.popleft()
            if not turn.done():  # a cancelled waiter is passed over
                turn.set_result(_TURN)
                return
        del self._waiting[key]


class Registry:
    """Reads go through this process's cache; writes go to the backend, then into the cache.

    A cached entry is served as a hit while it is fresh: the backend is coherent (it reports
    other nodes' changes, which drop entries at once) and the entry is younger than
    `cache_max_age_ms`; without such reports its life is cut to `UNTRACKED_MAX_AGE_MS`, the
    window in which another node's write may be unseen here. An entry that is no longer fresh
    is still served, marked stale, when the backend cannot be reached.
    """

    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        #: Where contexts are stored: every read and write below goes to it.
        self.contexts = backend.contexts
        #: Where a create in a session looks the session up.
        self.sessions = backend.sessions
        self.default_ttl = settings.default_ttl
        self.max_bytes = settings.max_context_bytes
        self.max_document_bytes = settings.max_document_bytes
        self.max_age_ms = settings.cache_max_age_ms
        ring = settings.encryption_ring()
        #: Seals what is stored (FASTCTX_ENCRYPTION_KEYS); its ring is None when nothing is.
        self.sealing = Sealing(_core.Keyring(ring) if ring else None)
        default_quota, quotas = settings.tenant_quotas()
        #: Counts what each bounded tenant keeps stored (FASTCTX_TENANT_BYTES); None: no bound.
        self.storage: StorageQuotas | None = None
        if default_quota or any(quotas.values()):
            self.storage = StorageQuotas(backend.quotas, default_quota, quotas)
        self.cache: _core.Cache | None = None
        if settings.cache_bytes > 0:
            self.cache = _core.Cache(settings.cache_bytes)
        # Entries cached before this moment were cached while changes may have gone unseen.
        self._valid_since = 0
        self._locks = _KeyedLocks()
        self._fills = _Fills()
        backend.watch(self._changed_elsewhere)

    def _changed_elsewhere(self, ids: list[str] | None) -> None:
        if self.cache is None:
            return
        if ids is None:
            self._valid_since = now_ms() + 1
            self._fills.report_all()
            return
        for changed in ids:
            # Kept, no longer fresh: the next read brings it up to date from the log (or
            # serves it, marked stale, while the backend cannot be reached).
            self.cache.outdate(changed)
            self._fills.report(changed)

    def fresh(self, key: str) -> tuple[Document, int, int, int] | None:
        """The cached (document, version, expires_at, cached_at) of `key`, if it may be served;
        the document as `Read.payload` has it."""
        if self.cache is None:
            return None
        entry = self.cache.get(key)
        return entry if entry is not None and self._is_fresh(entry[3]) else None

    def _is_fresh(self, cached_at: int) -> bool:
        if cached_at < self._valid_since:
            return False
        if self.backend.in_process:
            return True  # every write to it passes through here
        max_age = self.max_age_ms if self.backend.coherent else UNTRACKED_MAX_AGE_MS
        return now_ms() - cached_at <= max_age

    def _held(self, key: str, fresh: bool) -> Current | None:
        """The context as this node's cache holds it: only if fresh, or at any age."""
        entry = None if self.cache is None else self.cache.peek(key)
        if entry is None or entry[4] is None or (fresh and not self._is_fresh(entry[3])):
            return None
        created_at, session, base, log_size, base_size = cast(Extra, entry[4])
        return Current(entry[0], entry[1], created_at, entry[2], session, base, log_size, base_size)

    def _remember(self, key: str, current: Current, began: int | None = None, own: int = 0) -> None:
        """Cache `current`, fresh; or outdated, if `key` was reported changed more than `own`
        times (the fill's own writes) since `_fills.begin` told `began`."""
        if self.cache is not None:
            extra: Extra = (
                current.created_at,
                current.session,
                current.base,
                current.log_size,
                current.base_size,
            )
            self.cache.put(key, current.payload, current.version, current.expires_at, extra)
            if began is not None and self._fills.overtaken(key, began, own):
                self.cache.outdate(key)

    def _forget(self, key: str) -> None:
        if self.cache is not None:
            self.cache.invalidate(key)

    def outdate(self, tenant: str, token: str) -> None:
        """Mark this node's cached copy of a context as behind (an event has told of a newer
        version): the next read catches it up."""
        if self.cache is not None:
            key = context_id(tenant, token)
            self.cache.outdate(key)
            self._fills.report(key)

    def forget(self, tenant: str, token: str) -> None:
        """Drop this node's cached copy of a context deleted by other means (a session)."""
        self._forget(context_id(tenant, token))

    async def create(
        self, tenant: str, document: bytes, ttl: int | None = None, session: str | None = None
    ) -> Created:
        """Store `document` (JSON bytes, kept byte for byte) under a new token."""
        self._check_size(document, self.max_bytes, "FASTCTX_MAX_CONTEXT_BYTES")
        _core.validate_json(document)
        ttl_ms = (ttl or self.default_ttl) * 1000
        now = now_ms()
        if session is not None:
            if not _core.is_token(session):
                raise NotFound("no such session")
            record = await self.sessions.touch(tenant, session, now)
            if record is None:
                raise NotFound("no such session")
            ttl_ms = min(ttl_ms, record.ttl)  # a session's contexts never outlive it
        expires_at = now + ttl_ms
        token = _core.new_token()
        frame = _core.encode_frame(
            document,
            1,
            now,
            now,
            expires_at,
            session,
            self.sealing.ring,
            Sealing.name(tenant, token),
        )
        if self.storage is not None:
            await self.storage.keep(tenant, token, len(document), expires_at)
        if not await self.contexts.insert(tenant, token, frame, expires_at, session):
            if self.storage is not None:
                await self.storage.release(tenant, [token])
            raise NotFound("no such session")
        current = Current(document, 1, now, expires_at, session, 1, 0, len(document))
        self._remember(context_id(tenant, token), current)
        return Created(token, 1, expires_at)

    async def read(self, tenant: str, token: str, fresh: bool = False) -> Read:
        """The stored document; `fresh` skips this node's cache (but not its stale fallback)."""
        if not _core.is_token(token):
            raise NotFound("no such context")
        key = context_id(tenant, token)
        if not fresh:
            cached = self.fresh(key)
            if cached is not None:
                return Read(cached[0], cached[1], "hit")
        try:
            current = await self._confirmed(tenant, token, key) if fresh else None
            if current is None:
                # A cache miss may be read from a replica, if the backend reads from them.
                current = await self._fetch(tenant, token, key, relaxed=not fresh)
        except BackendError:
            stale = None if self.cache is None else self.cache.get(key)
            if stale is None:
                raise
            return Read(stale[0], stale[1], "stale")
        if current is None:
            raise NotFound("no such context")
        return Read(current.payload, current.version, "miss")

    async def read_version(self, tenant: str, token: str, version: int) -> Read:
        """The document as it was at `version`, while the stored log still holds it."""
        if not _core.is_token(token):
            raise NotFound("no such context")
        key = context_id(tenant, token)
        held = self._held(key, fresh=True)
        if held is not None and held.version == version:
            return Read(held.payload, version, "hit")
        stored = await self._load(tenant, token)
        name = Sealing.name(tenant, token)
        frame = _core.decode_frame(stored.frame, self.sealing.ring, name)
        if version > frame.version:
            raise NotFound(f"no version {version}: the context is at version {frame.version}")
        if not stored.log:
            oldest, entries = frame.version, []
        else:
            oldest = patchlog.base_version(stored.log)
            entries = patchlog.entries(stored.log, patchlog.HEADER_SIZE)
            check_sequence(entries, oldest, frame.version)
        if version < oldest:
            raise VersionGone(f"version {version} is no longer kept; the oldest is {oldest}")
        patches = opened(entries[: version - oldest], self.sealing, name)
        return Read(document_bytes(_core.apply_patches(frame.payload, patches)), version, "miss")

    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[tuple[bytes, int] | None]:
        """Documents and versions in request order; None for unknown or malformed tokens."""
        found: dict[str, tuple[bytes, int] | None] = {}
        wanted: list[str] = []
        for token in dict.fromkeys(tokens):
            if not _core.is_token(token):
                found[token] = None
                continue
            cached = self.fresh(context_id(tenant, token))
            if cached is not None:
                found[token] = (document_bytes(cached[0]), cached[1])
            else:
                wanted.append(token)
        keys = [context_id(tenant, token) for token in wanted]
        began = [self._fills.begin(key) for key in keys]
        try:
            loaded = await self.contexts.load_many(tenant, wanted)
            for token, key, filled, stored in zip(wanted, keys, began, loaded, strict=True):
                if stored is None:
                    found[token] = None
                    continue
                current = materialize(stored, self.sealing, Sealing.name(tenant, token))
                self._remember(key, current, filled)
                found[token] = (document_bytes(current.payload), current.version)
        finally:
            for key in keys:
                self._fills.end(key)
        return [found[token] for token in tokens]

    async def meta(self, tenant: str, token: str) -> Meta:
        key = context_id(tenant, token)
        began = self._fills.begin(key)
        try:
            stored = await self._load(tenant, token)
            name = Sealing.name(tenant, token)
            frame = _core.decode_frame(stored.frame, self.sealing.ring, name)
            current = materialize(stored, self.sealing, name)
            self._remember(key, current, began)
        finally:
            self._fills.end(key)
        return Meta(
            token,
            current.version,
            len(current.payload),
            len(stored.frame) + len(stored.log),
            frame.created_at,
            frame.updated_at,
            frame.expires_at,
            frame.session,
            current.base,
        )

    async def replace(
        self, tenant: str, token: str, document: bytes, if_version: int | None = None
    ) -> int:
        """Store a new document, in place of the base and the log; returns the new version."""
        self._check_size(document, self.max_bytes, "FASTCTX_MAX_CONTEXT_BYTES")
        _core.validate_json(document)
        return await self._write(tenant, token, if_version, lambda _: (document, None))

    async def patch(
        self, tenant: str, token: str, patch: bytes, kind: PatchKind, if_version: int | None = None
    ) -> int:
        """Apply an RFC 7386 merge patch or an RFC 6902 JSON Patch; returns the new version.

        What is stored is the change: a JSON Patch appended to the context's log (a merge patch
        restated as one), not the document."""
        _core.validate_json(patch)
        if kind == "merge":

            def change(document: Document) -> tuple[Document, bytes]:
                json_patch, result = _core.merge_as_json_patch(document_bytes(document), patch)
                return result, json_patch

        else:

            def change(document: Document) -> tuple[Document, bytes]:
                return _core.patched(document, patch), patch

        return await self._write(tenant, token, if_version, change, joins=True)

    async def append(
        self,
        tenant: str,
        token: str,
        path: str,
        items: Sequence[bytes],
        if_version: int | None = None,
    ) -> int:
        """Append `items` (each the JSON of one value) to the array at `path`, a JSON Pointer;
        with nothing there, the array of them is created (its parent must exist). Applied as
        the JSON Patch `append_patch` makes of the current document; returns the new version.
        """
        for item in items:
            _core.validate_json(item)  # spliced into a patch: one value each, nothing more

        def change(document: Document) -> tuple[Document, bytes]:
            try:
                patch = append_patch(document, path, items)
                return _core.patched(document, patch), patch
            except _core.PatchError as exc:
                reason = _OPERATION.sub("", str(exc))
                raise InvalidPatch(f"cannot append to {path or 'the document'}: {reason}") from None

        return await self._write(tenant, token, if_version, change, joins=True)

    async def delete(self, tenant: str, token: str, if_version: int | None = None) -> None:
        async def remove(expected: bytes, current: Current) -> tuple[Outcome, None]:
            outcome = await self.contexts.remove(tenant, token, expected, current.session)
            self._forget(context_id(tenant, token))
            if outcome is Outcome.DONE and self.storage is not None:
                await self.storage.release(tenant, [token])
            return outcome, None

        await self._conditional(tenant, token, if_version, remove)

    async def reseal(self, tenant: str, token: str) -> bool:
        """Write the context again under the sealing key (`fastctx rekey`), at its version, as
        one base: its log folded in, so that no part of it stays under another key or in the
        clear. False when all of it is under that key already, or it is gone. Earlier versions
        are no longer kept after it (`?version=` answers 410 for them)."""
        ring = self.sealing.ring
        assert ring is not None, "reseal needs FASTCTX_ENCRYPTION_KEYS"
        name = Sealing.name(tenant, token)
        for _ in range(MAX_WRITE_ATTEMPTS):
            stored = await self.contexts.load(tenant, token)
            if stored is None:
                return False
            frame = _core.decode_frame(stored.frame, ring, name)
            entries = patchlog.entries(stored.log, patchlog.HEADER_SIZE) if stored.log else []
            if frame.key_id == ring.primary and all(
                key_id(entry.patch) == ring.primary for entry in entries
            ):
                return False
            current = materialize(stored, self.sealing, name)
            resealed = _core.encode_frame(
                document_bytes(current.payload),
                current.version,
                frame.created_at,
                frame.updated_at,
                frame.expires_at,
                frame.session,
                ring,
                name,
            )
            expected = current.version.to_bytes(8, "little")
            outcome = await self.contexts.reseal(tenant, token, expected, resealed)
            if outcome is not Outcome.CONFLICT:
                self._forget(context_id(tenant, token))
                return outcome is Outcome.DONE
            await _backoff()  # written meanwhile: read it again
        raise Unavailable("too many concurrent writers on this context", retry_after=1)

    def _check_size(self, document: Document, limit: int, setting: str) -> None:
        # The HTTP layer refuses bodies over FASTCTX_MAX_CONTEXT_BYTES before reading them; this
        # holds for every way in (MCP tools too). A document sent whole is bounded by what one
        # request may send; one grown by patches, by FASTCTX_MAX_DOCUMENT_BYTES.
        if len(document) > limit:
            raise PayloadTooLarge(
                f"the document would be {len(document)} bytes; {setting} is {limit}"
            )

    async def _load(self, tenant: str, token: str) -> Stored:
        if not _core.is_token(token):
            raise NotFound("no such context")
        stored = await self.contexts.load(tenant, token)
        if stored is None:
            self._forget(context_id(tenant, token))
            raise NotFound("no such context")
        return stored

    async def _confirmed(self, tenant: str, token: str, key: str) -> Current | None:
        """The copy this node holds as current, when the backend's version is still its own:
        a read that skips the cache asks for the 8 version bytes, not for the document."""
        held = self._held(key, fresh=True)
        if held is None or await self.contexts.version(tenant, token) != held.version:
            return None
        return held

    async def _fetch(self, tenant: str, token: str, key: str, relaxed: bool) -> Current | None:
        """The context from the backend, cached. A copy this node holds, however old, is
        brought up to date with the log entries written since, when the log still extends it;
        otherwise the whole context is read (base and log, in one round trip)."""
        began = self._fills.begin(key)
        try:
            return await self._fetched(tenant, token, key, relaxed, began)
        finally:
            self._fills.end(key)

    async def _fetched(
        self, tenant: str, token: str, key: str, relaxed: bool, began: int
    ) -> Current | None:
        held = self._held(key, fresh=False)
        current: Current | None = None
        if held is not None:
            since = await self.contexts.catch_up(
                tenant, token, held.version, held.base, max(held.log_size, patchlog.HEADER_SIZE)
            )
            if since is None:
                self._forget(key)
                return None
            if since.stored is not None:
                current = materialize(since.stored, self.sealing, Sealing.name(tenant, token))
            elif not since.tail:
                current = held
            else:
                current = caught_up(held, since.tail, self.sealing, Sealing.name(tenant, token))
        if current is None:
            load = self.contexts.load_relaxed if relaxed else self.contexts.load
            stored = await load(tenant, token)
            if stored is None:
                self._forget(key)
                return None
            current = materialize(stored, self.sealing, Sealing.name(tenant, token))
        self._remember(key, current, began)
        return current

    async def _write(
        self,
        tenant: str,
        token: str,
        if_version: int | None,
        change: Change,
        joins: bool = False,
    ) -> int:
        """Write what `change` makes of the document: (the new document, the JSON Patch that
        made it), appended to the log; or (the new document, None), stored whole. A change
        that `joins` always makes a patch: while it waits for its key, the writer ahead of it
        may append it with its own."""
        key = context_id(tenant, token)

        async def attempt(expected: bytes, old: Current) -> tuple[Outcome, int]:
            document, patch = change(old.payload)
            # A patch can grow a document past what one request may send, up to this bound.
            self._check_size(document, self.max_document_bytes, "FASTCTX_MAX_DOCUMENT_BYTES")
            version, now = old.version + 1, now_ms()
            new: Current | None
            began = self._fills.begin(key)
            try:
                if patch is None:
                    outcome, new = await self._write_whole(
                        tenant, token, expected, old, document, now
                    )
                else:
                    outcome, new = await self._append(
                        tenant, token, expected, old, document, patch, now
                    )
                if outcome is Outcome.DONE and new is not None:
                    self._remember(key, new, began, own=1)
            finally:
                self._fills.end(key)
            return outcome, version

        return await self._conditional(
            tenant, token, if_version, attempt, change if joins else None
        )

    async def _append(
        self,
        tenant: str,
        token: str,
        expected: bytes,
        old: Current,
        document: Document,
        patch: bytes,
        now: int,
    ) -> tuple[Outcome, Current | None]:
        """Append `patch` (which made `document` of `old`) to the log, with the patches of the
        writers queued behind it when there are any (`_append_joined`); fold the log into a
        new base instead when it has grown past its bounds (patchlog.fold_at)."""
        version = old.version + 1
        name = Sealing.name(tenant, token)
        patch = self.sealing.seal_patch(patch, name, version)
        shown = patch if len(patch) <= EVENT_PATCH_MAX_BYTES else b""
        record = patchlog.entry(version, now, patch)
        log_size = max(old.log_size, patchlog.HEADER_SIZE) + len(record)
        if patchlog.fold_at(old.base_size, log_size, version - old.base):
            return await self._fold(tenant, token, expected, old, document, record, shown)
        key = context_id(tenant, token)
        batch = None
        if self._locks.joining(key) is not None:
            batch = _Batch(patch, document, log_size)
            self._joined(key, name, old, batch)
        if batch is not None and batch.answers:
            outcome, size = await self._append_batch(tenant, token, key, old, now, batch)
            if outcome is not Outcome.REBASE:
                # Cached by `_append_batch` as its reply came in: caching it again here, later,
                # could mark it fresh over a change report that came in between.
                return outcome, None
        else:
            if self.storage is not None:
                await self.storage.keep(tenant, token, old.base_size + log_size, old.expires_at)
            head = _HEAD.pack(version, old.created_at, now)
            outcome, size = await self.contexts.append(tenant, token, head, old.session, [patch])
        if outcome is Outcome.REBASE:  # a frame of format 1: written whole, once
            return await self._write_whole(tenant, token, expected, old, document, now, shown)
        return outcome, _appended(old, document, version, size)

    def _joined(self, key: str, name: bytes, old: Current, batch: _Batch) -> None:
        """Take into `batch` the jobs of the writers first in line for `key`, each made of the
        document the one before it left, while they can go in the same append: no fixed
        version other than the one they would find, and no fold needed. A job whose change
        fails is answered with its error if the append is written, as it would be in its
        own turn. At most BATCH_MAX_PATCHES jobs and BATCH_MAX_BYTES of their patches."""
        version = old.version + len(batch.patches)
        room = BATCH_MAX_BYTES
        while len(batch.answers) < BATCH_MAX_PATCHES:
            job = self._locks.joining(key)
            if job is None:
                return
            if job.if_version is not None and job.if_version != version:
                return  # it answers 412 in its own turn, or writes then
            try:
                document, patch = job.change(batch.document)
                self._check_size(document, self.max_document_bytes, "FASTCTX_MAX_DOCUMENT_BYTES")
                assert patch is not None, "a job's change makes a patch"
            except Exception as exc:
                batch.answers.append((self._locks.join(key), exc))
                continue
            patch = self.sealing.seal_patch(patch, name, version + 1)
            log_size = batch.log_size + patchlog.ENTRY_SIZE + len(patch)
            if patchlog.fold_at(old.base_size, log_size, version + 1 - old.base):
                return  # it folds the log in its own turn
            room -= len(patch)
            if room < 0:
                return  # it goes in the next append
            version += 1
            batch.patches.append(patch)
            batch.document, batch.log_size = document, log_size
            batch.answers.append((self._locks.join(key), version))

    async def _append_batch(
        self, tenant: str, token: str, key: str, old: Current, now: int, batch: _Batch
    ) -> tuple[Outcome, int]:
        """Append a batch's patches and answer its writers when Redis has answered, even if
        the writer that sent it is cancelled meanwhile: they are told what became of their
        writes, and this node's cache holds what they were told."""
        version = old.version + len(batch.patches)
        try:
            if self.storage is not None:
                size = old.base_size + batch.log_size
                await self.storage.keep(tenant, token, size, old.expires_at)
        except BaseException:
            batch.again()
            raise
        head = _HEAD.pack(version, old.created_at, now)
        written = asyncio.ensure_future(
            self.contexts.append(tenant, token, head, old.session, batch.patches)
        )
        # Counted apart from the sending writer's fill: that one ends if it is cancelled.
        began = self._fills.begin(key)

        def answer(written: asyncio.Future[tuple[Outcome, int]]) -> None:
            if written.cancelled():
                batch.again()
                return
            error = written.exception()
            if error is not None:  # what became of the append is not known: as for one write
                for waiter, _ in batch.answers:
                    if not waiter.done():
                        waiter.set_exception(error)
                return
            outcome, size = written.result()
            if outcome is not Outcome.DONE:
                batch.again()
                return
            self._remember(key, _appended(old, batch.document, version, size), began, own=1)
            for waiter, result in batch.answers:
                if waiter.done():
                    continue  # its request was cancelled
                if isinstance(result, Exception):
                    waiter.set_exception(result)
                else:
                    waiter.set_result(result)

        written.add_done_callback(answer)
        # Run after `answer`, even if it fails: the batch's fill is out until it is cached.
        written.add_done_callback(lambda _: self._fills.end(key))
        return await asyncio.shield(written)

    async def _write_whole(
        self,
        tenant: str,
        token: str,
        expected: bytes,
        old: Current,
        document: Document,
        now: int,
        shown: bytes = b"",
    ) -> tuple[Outcome, Current]:
        """Store `document` whole as the version after `old`, in place of its base and log;
        `shown`, the patch that made it, goes with the change event."""
        version = old.version + 1
        whole = document_bytes(document)
        if self.storage is not None:
            await self.storage.keep(tenant, token, len(whole), old.expires_at)
        frame = _core.encode_frame(
            whole,
            version,
            old.created_at,
            now,
            old.expires_at,
            old.session,
            self.sealing.ring,
            Sealing.name(tenant, token),
        )
        outcome = await self.contexts.swap(
            tenant, token, expected, frame, old.expires_at, old.session, b"", shown
        )
        new = Current(
            document, version, old.created_at, old.expires_at, old.session, version, 0, len(whole)
        )
        return outcome, new

    async def _fold(
        self,
        tenant: str,
        token: str,
        expected: bytes,
        old: Current,
        document: Document,
        record: bytes,
        shown: bytes,
    ) -> tuple[Outcome, Current | None]:
        """Write a new base, keeping the last patchlog.KEPT_VERSIONS patches (the new one
        among them) in the log, so that the versions they made stay readable."""
        stored = await self.contexts.load(tenant, token)
        if stored is None:
            return Outcome.MISSING, None
        name = Sealing.name(tenant, token)
        frame = _core.decode_frame(stored.frame, self.sealing.ring, name)
        if frame.version != old.version:
            return Outcome.CONFLICT, None
        base = patchlog.base_version(stored.log) if stored.log else frame.version
        entries = patchlog.entries(stored.log, patchlog.HEADER_SIZE) if stored.log else []
        entries += patchlog.entries(record)
        kept = entries[-patchlog.KEPT_VERSIONS :]
        folded = opened(entries[: len(entries) - len(kept)], self.sealing, name)
        new_base = kept[0].version - 1
        base_document = document_bytes(_core.apply_patches(frame.payload, folded))
        version, now = kept[-1].version, kept[-1].updated_at
        new_frame = _core.encode_frame(
            base_document,
            version,
            old.created_at,
            now,
            old.expires_at,
            old.session,
            self.sealing.ring,
            name,
        )
        log = patchlog.encode(new_base, kept)
        if self.storage is not None:
            await self.storage.keep(tenant, token, len(base_document) + len(log), old.expires_at)
        outcome = await self.contexts.swap(
            tenant, token, expected, new_frame, old.expires_at, old.session, log, shown
        )
        assert base <= new_base
        return outcome, Current(
            document,
            version,
            old.created_at,
            old.expires_at,
            old.session,
            new_base,
            len(log),
            len(base_document),
        )

    async def _conditional(
        self,
        tenant: str,
        token: str,
        if_version: int | None,
        attempt: Callable[[bytes, Current], Awaitable[tuple[Outcome, T]]],
        change: Change | None = None,
    ) -> T:
        """Read the context, check If-Match, then `attempt` the conditional write.

        The write names the version it read, so it fails rather than overwrite another
        writer's change; the loser re-reads and tries again unless the client fixed a version.
        The first attempt uses this node's cached copy when it is fresh: if the copy was
        behind, the write's own version check refuses it and the context is read from the
        backend (caught up from the copy, see _fetch), so only a successful write, or what
        the backend says, decides the answer. A write that is a `change` (a patch) leaves it
        as its job while it waits for the key: the writer ahead may write it with its own (see
        `_joined`), and its answer is then that writer's.
        """
        key = context_id(tenant, token)
        if not _core.is_token(token):
            raise NotFound("no such context")
        refused = 0  # appends that took the job and were refused: past a bound, it waits alone
        while not self._locks.take(key):
            job = None
            if change is not None and refused < MAX_WRITE_ATTEMPTS:
                job = _Job(change, if_version)
            got = await self._locks.wait(key, job)
            if got is _TURN:
                break
            if got is not _AGAIN:
                return cast(T, got)  # written, as the version it was given
            refused += 1
        try:
            cached = self._held(key, fresh=True)
            for _ in range(MAX_WRITE_ATTEMPTS):
                current: Current | None
                if cached is not None:
                    current = cached
                else:
                    current = await self._fetch(tenant, token, key, relaxed=False)
                    if current is None:
                        raise NotFound("no such context")
                expected = current.version.to_bytes(8, "little")
                from_cache, cached = cached is not None, None
                if if_version is not None and current.version != if_version:
                    if from_cache:
                        continue  # the backend's copy decides
                    raise VersionConflict(f"context is at version {current.version}")
                outcome, result = await attempt(expected, current)
                if outcome is Outcome.DONE:
                    return result
                if self.cache is not None:
                    self.cache.outdate(key)  # behind: caught up from, on the next attempt
                if from_cache:
                    continue  # the cached copy was behind: read the backend's
                if outcome is Outcome.MISSING:
                    self._forget(key)
                    if self.storage is not None:  # what the attempt counted
                        await self.storage.release(tenant, [token])
                    raise NotFound("no such context")
                if if_version is not None:
                    raise VersionConflict("context changed by another writer")
                await _backoff()
        finally:
            self._locks.release(key)
        raise Unavailable("too many concurrent writers on this context", retry_after=1)


def _appended(old: Current, document: Document, version: int, log_size: int) -> Current:
    """`old` once an append has made it `document` at `version`, its log `log_size` long."""
    return Current(
        document,
        version,
        old.created_at,
        old.expires_at,
        old.session,
        old.base,
        log_size,
        old.base_size,
    )


async def _backoff() -> None:
    # Writers on other nodes lost the same race; jitter keeps them from colliding again.
    await asyncio.sleep(random.uniform(0, 0.002))
