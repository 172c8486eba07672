"""A key-value store for FastMCP (the `AsyncKeyValue` protocol of py-key-value) kept in fastctx.

FastMCP takes such a store for its session state (`FastMCP(session_state_store=...)`), for the
events of its resumable streams (`fastmcp.server.event_store.EventStore(storage=...)`), for
response caching and for its OAuth proxy's clients. Given this one, every process of a FastMCP
server shares them through fastctx, on one Redis or a cluster, with no sticky routing.

The store is a handful of fastctx contexts: a root, whose token is the store's address and is
what every process is given, and the buckets it names. An entry lives in one bucket (chosen by
a hash of its collection and key), as a member of that bucket's document, so that each
operation is one request: a read of one member by JSON Pointer (answered from the server's
cache), a write or a delete of one member by JSON Patch (whose cost follows the entry, not
the bucket). Expired entries are no longer returned at once, and are swept out of a bucket
every `sweep_every` writes to it, so that what is kept stays bounded by what is live.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

try:
    from key_value.aio._utils.managed_entry import ManagedEntry  # what every store is written in
    from key_value.aio.stores.base import (
        BaseCullStore,
        BaseDestroyStore,
        BaseEnumerateCollectionsStore,
        BaseEnumerateKeysStore,
    )
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f'{__name__} needs FastMCP: pip install "fastctx[fastmcp]" ({missing})'
    ) from missing

from fastctx.client import AsyncClient
from fastctx.errors import FastctxError, InvalidPatch, PathNotFound

__all__ = ["FastctxStore"]

#: The longest ttl the server takes (ten years): a store outlives what it holds.
STORE_TTL = 10 * 365 * 86400
#: A root document says it is one with this member, and how many buckets follow.
ROOT_MARK = "fastctx_store"
#: Expired entries are swept out of a bucket every so many writes to it.
SWEEP_EVERY = 256
#: At most so many removals in one sweeping patch, to keep each write small.
SWEEP_BATCH = 500


def pointer(member: str) -> str:
    """The JSON Pointer (RFC 6901) of a member of the document."""
    return "/" + member.replace("~", "~0").replace("/", "~1")


def member_of(collection: str, key: str) -> str:
    """The member an entry is kept under; the collection's length keeps it unambiguous."""
    return f"{len(collection)}:{collection}:{key}"


def split_member(member: str) -> tuple[str, str] | None:
    length, _, rest = member.partition(":")
    if not length.isdigit() or len(rest) <= int(length) or rest[int(length)] != ":":
        return None
    return rest[: int(length)], rest[int(length) + 1 :]


class FastctxStore(
    BaseEnumerateKeysStore, BaseEnumerateCollectionsStore, BaseCullStore, BaseDestroyStore
):
    """py-key-value's `AsyncKeyValue`, kept in the fastctx store whose root token is `token`.

    Make the store once with `await FastctxStore.create(client)`, then give its token to every
    process, as a Redis URL would be:

        store = FastctxStore(AsyncClient("https://ctx.example.com", api_key), token)
        mcp = FastMCP("notes", session_state_store=store)
    """

    def __init__(
        self,
        client: AsyncClient,
        token: str,
        *,
        default_collection: str | None = None,
        sweep_every: int = SWEEP_EVERY,
    ) -> None:
        if sweep_every < 1:
            raise ValueError("sweep_every must be at least 1")
        self.client = client
        self.token = token
        self.sweep_every = sweep_every
        self._buckets: list[str] = []
        super().__init__(default_collection=default_collection, stable_api=True)

    @classmethod
    async def create(cls, client: AsyncClient, *, buckets: int = 16, ttl: int = STORE_TTL) -> str:
        """Make a new, empty store of `buckets` buckets; returns its token.

        More buckets spread the writes of a busy store over more contexts (each context takes
        its writes one at a time) and keep each document smaller; a store keeps the number it
        was made with. `ttl`: how long the store is kept, ten years unless told.
        """
        if not 1 <= buckets <= 1024:
            raise ValueError("a store has from 1 to 1024 buckets")
        tokens = [await client.create({}, ttl=ttl) for _ in range(buckets)]
        return await client.create({ROOT_MARK: 1, "buckets": tokens}, ttl=ttl)

    async def _setup(self) -> None:
        root = await self.client.get(self.token)
        buckets = root.get("buckets") if isinstance(root, dict) else None
        if (
            not isinstance(root, dict)
            or root.get(ROOT_MARK) != 1
            or not isinstance(buckets, list)
            or not buckets
            or not all(isinstance(token, str) for token in buckets)
        ):
            raise ValueError(f"context {self.token} is not a fastctx store")
        self._buckets = buckets

    def _bucket(self, member: str) -> str:
        digest = hashlib.blake2b(member.encode(), digest_size=8).digest()
        return self._buckets[int.from_bytes(digest, "big") % len(self._buckets)]

    def _entry(self, stored: Any) -> ManagedEntry | None:
        if not isinstance(stored, dict):
            return None
        return self._serialization_adapter.load_dict(data=stored)

    async def _get_managed_entry(self, *, collection: str, key: str) -> ManagedEntry | None:
        member = member_of(collection, key)
        try:
            stored = await self.client.get(self._bucket(member), path=pointer(member))
        except PathNotFound:
            return None
        return self._entry(stored)

    async def _get_managed_entries(
        self, *, collection: str, keys: Sequence[str]
    ) -> list[ManagedEntry | None]:
        return list(
            await asyncio.gather(
                *(self._get_managed_entry(collection=collection, key=key) for key in keys)
            )
        )

    def _stored(self, entry: ManagedEntry) -> dict[str, Any]:
        return self._serialization_adapter.dump_dict(entry=entry)

    async def _write(self, bucket: str, operations: list[Any]) -> None:
        version = await self.client.json_patch(bucket, operations)
        if version % self.sweep_every == 0:
            await self._sweep(bucket)

    async def _put_managed_entry(
        self, *, collection: str, key: str, managed_entry: ManagedEntry
    ) -> None:
        member = member_of(collection, key)
        operation = {"op": "add", "path": pointer(member), "value": self._stored(managed_entry)}
        await self._write(self._bucket(member), [operation])

    async def _put_managed_entries(
        self,
        *,
        collection: str,
        keys: Sequence[str],
        managed_entries: Sequence[ManagedEntry],
        ttl: float | None,
        created_at: datetime,
        expires_at: datetime | None,
    ) -> None:
        # One patch per bucket: the entries that share a bucket are written together or not.
        by_bucket: dict[str, list[Any]] = {}
        for key, entry in zip(keys, managed_entries, strict=True):
            member = member_of(collection, key)
            operation = {"op": "add", "path": pointer(member), "value": self._stored(entry)}
            by_bucket.setdefault(self._bucket(member), []).append(operation)
        await asyncio.gather(*(self._write(b, ops) for b, ops in by_bucket.items()))

    async def _delete_managed_entry(self, *, key: str, collection: str) -> bool:
        member = member_of(collection, key)
        try:
            await self._write(self._bucket(member), [{"op": "remove", "path": pointer(member)}])
        except InvalidPatch:  # nothing there to remove
            return False
        return True

    async def _delete_managed_entries(self, *, keys: Sequence[str], collection: str) -> int:
        deleted = await asyncio.gather(
            *(self._delete_managed_entry(key=key, collection=collection) for key in keys)
        )
        return sum(deleted)

    async def _members(self) -> list[str]:
        documents = await self.client.mget(self._buckets)
        return [member for document in documents if document for member in document]

    async def _get_collection_keys(self, *, collection: str, limit: int | None = None) -> list[str]:
        keys = []
        for member in await self._members():
            parts = split_member(member)
            if parts is not None and parts[0] == collection:
                keys.append(parts[1])
        return keys[:limit] if limit is not None else keys

    async def _get_collection_names(self, *, limit: int | None = None) -> list[str]:
        names = {parts[0] for m in await self._members() if (parts := split_member(m))}
        return sorted(names)[:limit] if limit is not None else sorted(names)

    async def _cull(self) -> None:
        for bucket in self._buckets:
            await self._sweep(bucket)

    async def _delete_store(self) -> bool:
        for token in [*self._buckets, self.token]:
            try:
                await self.client.delete(token)
            except FastctxError:
                return False
        return True

    async def _sweep(self, bucket: str) -> None:
        """Remove the bucket's expired entries, each only if no one has written it since."""
        document = await self.client.get(bucket)
        operations: list[Any] = []
        for member, stored in document.items():
            entry = self._entry(stored)
            if entry is None or not entry.is_expired:
                continue
            at = pointer(member)
            # A test on the expiry this sweep saw: an entry written again since is left alone.
            test = {"op": "test", "path": f"{at}/expires_at", "value": stored["expires_at"]}
            operations += [test, {"op": "remove", "path": at}]
        for start in range(0, len(operations), 2 * SWEEP_BATCH):
            batch = operations[start : start + 2 * SWEEP_BATCH]
            try:
                await self.client.json_patch(bucket, batch)
            except InvalidPatch:
                # One of them was written meanwhile: sweep the rest one by one.
                for index in range(0, len(batch), 2):
                    try:
                        await self.client.json_patch(bucket, batch[index : index + 2])
                    except InvalidPatch:
                        continue
