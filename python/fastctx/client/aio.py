"""The asyncio fastctx client: the same methods as Client, awaitable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from fastctx.client import _common as c
from fastctx.client._common import Connected, Event, SseParser, Step
from fastctx.client.cache import ClientCache
from fastctx.errors import NotFound, Unavailable, VersionGone

T = TypeVar("T")


class AsyncEventStream:
    """An async iterator of Events that reconnects with Last-Event-ID after a drop."""

    def __init__(
        self, client: AsyncClient, path: str, params: dict[str, str], parser: SseParser
    ) -> None:
        self._client = client
        self._path = path
        self._params = params
        self.parser = parser
        #: The HTTP response being read now; closing it drops the connection (and we resume).
        self.response: httpx.Response | None = None
        self._closed = False
        self._events = self._follow()

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            event = await anext(self._events)
            if not isinstance(event, Connected):
                return event

    def marked(self) -> AsyncGenerator[Event | Connected, None]:
        """The same events, with a `Connected` each time the stream (re)connects."""
        return self._events

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._events.aclose()
        if self.response is not None:
            await self.response.aclose()

    async def _follow(self) -> AsyncGenerator[Event | Connected, None]:
        attempt = 0
        http = self._client.http
        timeout = c.stream_timeout(self._client.timeout)
        while not self._closed:
            request = http.build_request(
                "GET", self._path, params=self._params, headers=self.parser.headers()
            )
            request.extensions["timeout"] = timeout.as_dict()
            try:
                self.response = await http.send(request, stream=True)
                try:
                    if self.response.status_code >= 400:
                        await self.response.aread()
                        c.check(self.response)
                    attempt = 0
                    yield Connected("Last-Event-ID" in request.headers)
                    lines = c.SseLines()
                    async for text in self.response.aiter_text():
                        for line in lines.feed(text):
                            event = self.parser.feed(line)
                            if event is not None:
                                yield event
                            if self.parser.finished:
                                return
                finally:
                    await self.response.aclose()
            except c.STREAM_DROPS as exc:
                error, from_server = c.unreachable(self._client.base_url, exc), False
            except Unavailable as exc:
                error, from_server = exc, True
            else:
                # The server ended the stream early (it is restarting, say): come back after
                # the pause it asked for, so that a server that keeps ending it is not hammered.
                await asyncio.sleep(self.parser.retry)
                continue
            if self._closed or attempt >= self._client.retries:
                raise error
            await asyncio.sleep(c.backoff(attempt, error, honour_retry_after=from_server))
            attempt += 1


class AsyncWatch:
    """An async iterator of one context's document as it changes; see AsyncClient.watch."""

    def __init__(self, client: AsyncClient, token: str) -> None:
        self._client = client
        self._token = token
        self._follower = c.Follower()
        #: The event stream followed now; closing its response drops the connection.
        self.stream: AsyncEventStream | None = None
        self._documents = self._follow()

    @property
    def version(self) -> int:
        """The version of the document handed out last (0 before the first)."""
        return self._follower.version

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Any:
        return await anext(self._documents)

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._documents.aclose()
        if self.stream is not None:
            await self.stream.aclose()

    async def _read(self) -> Step:
        return self._follower.read(await self._client._run(c.read_call(self._token)))

    async def _follow(self) -> AsyncGenerator[Any, None]:
        follower, last_id = self._follower, None
        while True:
            self.stream = stream = self._client.events(
                token=self._token, include="patch", last_event_id=last_id
            )
            try:
                async for item in stream.marked():
                    if isinstance(item, Connected):
                        # Read once the server follows the stream: no change falls in between.
                        step = Step.SKIP if item.resumed else await self._read()
                    else:
                        step = follower.take(item)
                        if step is Step.READ:
                            step = await self._read()
                    if step is Step.GONE:
                        return
                    if step is Step.NEW:
                        yield follower.document()
                return  # the stream ended: the context is gone
            except VersionGone:
                last_id = None  # the server cannot go on from there: from now on, read again
            except NotFound:
                if not follower.version:
                    raise  # there never was such a context
                return
            finally:
                await stream.aclose()


class AsyncClient:
    """A fastctx client over one pooled httpx.AsyncClient; every method is one HTTP call."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        cache_size: int = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: The last `cache_size` documents read or written, by token; None when off.
        self.cache = ClientCache(cache_size) if cache_size else None
        self.timeout = timeout
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, call: c.Call[T]) -> T:
        attempt = 0
        while True:
            try:
                return c.decode(call, await self.http.send(call.request(self.http)))
            except httpx.TransportError as exc:
                error = c.unreachable(self.base_url, exc)
                from_server = False
            except httpx.RequestError as exc:  # e.g. a body that its Content-Encoding garbles
                raise c.not_fastctx(f"{type(exc).__name__}: {exc}") from exc
            except Unavailable as exc:
                error, from_server = exc, True
            if not c.should_retry(call, attempt, self.retries):
                raise error
            await asyncio.sleep(c.backoff(attempt, error, honour_retry_after=from_server))
            attempt += 1

    async def create(self, data: Any, ttl: int | None = None, session: str | None = None) -> str:
        """Store `data`; returns its token."""
        return await self._run(c.create_call(data, ttl, session, self.cache))

    async def get(
        self,
        token: str,
        path: str | None = None,
        slice: c.Slice | None = None,
        version: int | None = None,
    ) -> Any:
        """The document; with a cache, a held one is revalidated with If-None-Match.

        With `path` (a JSON Pointer, "/messages"), only the value there; with `slice`
        ("-20:" or slice(-20, None)), only those elements of the array there (of the
        document, without a path). PathNotFound when the path names nothing. With
        `version`, the document as it was at that version, while the server keeps it
        (VersionGone when it no longer does).
        """
        return await self._run(c.get_call(token, self.cache, path, slice, version))

    async def put(self, token: str, data: Any, if_version: int | None = None) -> int:
        """Replace the document; returns the new version."""
        return await self._run(c.put_call(token, data, if_version, self.cache))

    async def patch(self, token: str, merge_patch: Any, if_version: int | None = None) -> int:
        """Apply an RFC 7386 merge patch; returns the new version."""
        return await self._run(c.patch_call(token, merge_patch, if_version, self.cache))

    async def json_patch(
        self, token: str, operations: list[Any], if_version: int | None = None
    ) -> int:
        """Apply an RFC 6902 JSON Patch (a list of operations) in one write; returns the new
        version. InvalidPatch when an operation cannot apply (a failed "test" among them),
        and then nothing of it is applied."""
        return await self._run(c.json_patch_call(token, operations, if_version, self.cache))

    async def delete(self, token: str) -> None:
        await self._run(c.delete_call(token, self.cache))

    async def mget(
        self, tokens: list[str], path: str | None = None, slice: c.Slice | None = None
    ) -> list[Any]:
        """The documents in the order asked; None for each token that does not exist.

        With `path` and `slice`, the part of each they name, as get() reads it; where they
        name nothing, the error (PathNotFound, or BadRequest for a slice of anything but an
        array) stands in the list in place of the data: returned, not raised.
        """
        return await self._run(c.mget_call(tokens, path, slice))

    async def append(
        self, token: str, path: str, *items: Any, if_version: int | None = None
    ) -> int:
        """Append `items` to the array at `path` (a JSON Pointer; "" for the document), in
        one write; with nothing there, the array is created (its parent must exist). Returns
        the new version. InvalidPatch when something other than an array is there."""
        return await self._run(c.append_call(token, path, items, if_version, self.cache))

    async def create_session(
        self, ttl: int | None = None, meta: dict[str, Any] | None = None
    ) -> str:
        """Open a session; returns its id."""
        return await self._run(c.session_call(ttl, meta))

    def events(
        self,
        token: str | None = None,
        session: str | None = None,
        include_data: bool = False,
        last_event_id: str | None = None,
        include: str | Sequence[str] | None = None,
    ) -> AsyncEventStream:
        """Changes to one context or one session as they happen: from now on, or from just
        after `last_event_id` (an Event.id kept from before; "0-0" for every retained one).
        `include`: "data" (the document), "patch" (what made each version), or both."""
        path = c.events_path(token, session)
        params = c.events_params(include, include_data)
        parser = SseParser(ends_on_delete=token is not None, last_id=last_event_id)
        return AsyncEventStream(self, path, params, parser)

    def watch(self, token: str) -> AsyncWatch:
        """As Client.watch: the document now, then each time it changes, until the context is
        deleted or expires; NotFound if there is no such context."""
        return AsyncWatch(self, token)
