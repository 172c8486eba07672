"""The blocking fastctx client."""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from fastctx.client import _common as c
from fastctx.client._common import Connected, Event, SseParser, Step
from fastctx.client.cache import ClientCache
from fastctx.errors import NotFound, Unavailable, VersionGone

T = TypeVar("T")


class EventStream:
    """An iterator of Events that reconnects with Last-Event-ID after a dropped connection."""

    def __init__(
        self, client: Client, path: str, params: dict[str, str], parser: SseParser
    ) -> None:
        self._client = client
        self._path = path
        self._params = params
        self.parser = parser
        #: The HTTP response being read now; closing it drops the connection (and we resume).
        self.response: httpx.Response | None = None
        self._closed = False
        self._events = self._follow()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        while True:
            event = next(self._events)
            if not isinstance(event, Connected):
                return event

    def marked(self) -> Generator[Event | Connected, None, None]:
        """The same events, with a `Connected` each time the stream (re)connects."""
        return self._events

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._events.close()
        if self.response is not None:
            self.response.close()

    def _follow(self) -> Generator[Event | Connected, None, None]:
        attempt = 0
        http = self._client.http
        timeout = c.stream_timeout(self._client.timeout)
        while not self._closed:
            request = http.build_request(
                "GET", self._path, params=self._params, headers=self.parser.headers()
            )
            request.extensions["timeout"] = timeout.as_dict()
            try:
                self.response = http.send(request, stream=True)
                try:
                    if self.response.status_code >= 400:
                        self.response.read()
                        c.check(self.response)
                    attempt = 0
                    yield Connected("Last-Event-ID" in request.headers)
                    lines = c.SseLines()
                    for text in self.response.iter_text():
                        for line in lines.feed(text):
                            event = self.parser.feed(line)
                            if event is not None:
                                yield event
                            if self.parser.finished:
                                return
                finally:
                    self.response.close()
            except c.STREAM_DROPS as exc:
                error, from_server = c.unreachable(self._client.base_url, exc), False
            except Unavailable as exc:
                error, from_server = exc, True
            else:
                # The server ended the stream early (it is restarting, say): come back after
                # the pause it asked for, so that a server that keeps ending it is not hammered.
                time.sleep(self.parser.retry)
                continue
            if self._closed or attempt >= self._client.retries:
                raise error
            time.sleep(c.backoff(attempt, error, honour_retry_after=from_server))
            attempt += 1


class Watch:
    """An iterator of one context's document as it changes; see Client.watch."""

    def __init__(self, client: Client, token: str) -> None:
        self._client = client
        self._token = token
        self._follower = c.Follower()
        #: The event stream followed now; closing its response drops the connection.
        self.stream: EventStream | None = None
        self._documents = self._follow()

    @property
    def version(self) -> int:
        """The version of the document handed out last (0 before the first)."""
        return self._follower.version

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Any:
        return next(self._documents)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._documents.close()
        if self.stream is not None:
            self.stream.close()

    def _read(self) -> Step:
        return self._follower.read(self._client._run(c.read_call(self._token)))

    def _follow(self) -> Generator[Any, None, None]:
        follower, last_id = self._follower, None
        while True:
            self.stream = stream = self._client.events(
                token=self._token, include="patch", last_event_id=last_id
            )
            try:
                for item in stream.marked():
                    if isinstance(item, Connected):
                        # Read once the server follows the stream: no change falls in between.
                        step = Step.SKIP if item.resumed else self._read()
                    else:
                        step = follower.take(item)
                        if step is Step.READ:
                            step = self._read()
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
                stream.close()


class Client:
    """A fastctx client over one pooled httpx.Client; every method is one HTTP call."""

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
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, call: c.Call[T]) -> T:
        attempt = 0
        while True:
            try:
                return c.decode(call, self.http.send(call.request(self.http)))
            except httpx.TransportError as exc:
                error = c.unreachable(self.base_url, exc)
                from_server = False
            except httpx.RequestError as exc:  # e.g. a body that its Content-Encoding garbles
                raise c.not_fastctx(f"{type(exc).__name__}: {exc}") from exc
            except Unavailable as exc:
                error, from_server = exc, True
            if not c.should_retry(call, attempt, self.retries):
                raise error
            time.sleep(c.backoff(attempt, error, honour_retry_after=from_server))
            attempt += 1

    def create(self, data: Any, ttl: int | None = None, session: str | None = None) -> str:
        """Store `data`; returns its token."""
        return self._run(c.create_call(data, ttl, session, self.cache))

    def get(
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
        return self._run(c.get_call(token, self.cache, path, slice, version))

    def put(self, token: str, data: Any, if_version: int | None = None) -> int:
        """Replace the document; returns the new version."""
        return self._run(c.put_call(token, data, if_version, self.cache))

    def patch(self, token: str, merge_patch: Any, if_version: int | None = None) -> int:
        """Apply an RFC 7386 merge patch; returns the new version."""
        return self._run(c.patch_call(token, merge_patch, if_version, self.cache))

    def json_patch(self, token: str, operations: list[Any], if_version: int | None = None) -> int:
        """Apply an RFC 6902 JSON Patch (a list of operations) in one write; returns the new
        version. InvalidPatch when an operation cannot apply (a failed "test" among them),
        and then nothing of it is applied."""
        return self._run(c.json_patch_call(token, operations, if_version, self.cache))

    def delete(self, token: str) -> None:
        self._run(c.delete_call(token, self.cache))

    def mget(
        self, tokens: list[str], path: str | None = None, slice: c.Slice | None = None
    ) -> list[Any]:
        """The documents in the order asked; None for each token that does not exist.

        With `path` and `slice`, the part of each they name, as get() reads it; where they
        name nothing, the error (PathNotFound, or BadRequest for a slice of anything but an
        array) stands in the list in place of the data: returned, not raised.
        """
        return self._run(c.mget_call(tokens, path, slice))

    def append(self, token: str, path: str, *items: Any, if_version: int | None = None) -> int:
        """Append `items` to the array at `path` (a JSON Pointer; "" for the document), in
        one write; with nothing there, the array is created (its parent must exist). Returns
        the new version. InvalidPatch when something other than an array is there."""
        return self._run(c.append_call(token, path, items, if_version, self.cache))

    def create_session(self, ttl: int | None = None, meta: dict[str, Any] | None = None) -> str:
        """Open a session; returns its id."""
        return self._run(c.session_call(ttl, meta))

    def events(
        self,
        token: str | None = None,
        session: str | None = None,
        include_data: bool = False,
        last_event_id: str | None = None,
        include: str | Sequence[str] | None = None,
    ) -> EventStream:
        """Changes to one context or one session as they happen: from now on, or from just
        after `last_event_id` (an Event.id kept from before; "0-0" for every retained one).
        `include`: "data" (the document), "patch" (what made each version), or both."""
        path = c.events_path(token, session)
        params = c.events_params(include, include_data)
        parser = SseParser(ends_on_delete=token is not None, last_id=last_event_id)
        return EventStream(self, path, params, parser)

    def watch(self, token: str) -> Watch:
        """The context's document now, then again each time it changes, until it is deleted
        or expires (then the iterator ends); NotFound if there is no such context.

        Follows `events(token, include="patch")` and applies each patch to its copy; reads the
        whole context again when an event cannot be applied (a gap in the versions, `resync`,
        or a resume the server cannot serve). Reconnects by itself as `events()` does.
        """
        return Watch(self, token)
