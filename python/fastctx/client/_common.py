"""What the sync and async clients share: request building, decoding, errors, retries, SSE."""

from __future__ import annotations

import enum
import operator
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from fastctx import _core, errors
from fastctx.client.cache import ClientCache, version_of
from fastctx.errors import (
    BadRequest,
    FastctxError,
    PathNotFound,
    RateLimited,
    Unavailable,
    VersionGone,
)
from fastctx.tracecontext import current_trace_headers

T = TypeVar("T")
Slice = str | slice
"""A slice of the array a read's path names: "start:end" as the server takes it ("-20:"), or
a Python slice (slice(-20, None)) without a step."""

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
MAX_BACKOFF = 10.0  # seconds; also caps a server's Retry-After so a call cannot hang for long
BASE_BACKOFF = 0.05
# A stream is quiet between events; the server pings every 15 s, so a longer silence means
# the connection is gone and we should reconnect.
STREAM_READ_TIMEOUT = 45.0


def _all_errors(cls: type[FastctxError]) -> list[type[FastctxError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_errors(sub))
    return found


# The problem `type` names the precise class (e.g. BackendError), finer than the status alone.
BY_SLUG: dict[str, type[FastctxError]] = {cls.slug: cls for cls in _all_errors(FastctxError)}
SLUG_PREFIX = "urn:fastctx:problem:"
# By status, for an answer whose problem type is not fastctx's: the server's statuses, and 410,
# which a read of a version no longer kept answers.
BY_STATUS: dict[int, type[FastctxError]] = {**errors.BY_STATUS, VersionGone.status: VersionGone}


@dataclass(frozen=True)
class Event:
    """One change from an SSE stream."""

    id: str
    #: `created` (version 1), `updated`, `deleted` or `expired`.
    type: str
    #: None on a session's own event (its expiry), which names no context.
    token: str | None
    version: int
    session: str | None = None
    #: The document, with `include="data"` (and on `created`, with `include="patch"`).
    data: Any = None
    #: With `include="patch"`, on `updated`: the JSON Patch (RFC 6902) that made this version.
    patch: Any = None
    #: With `include="patch"`: the event cannot say what made its version (the context has
    #: moved on since); read the context again.
    resync: bool = False


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP exchange, described once for both clients; `decode` turns 2xx into a result."""

    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    idempotent: bool
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    #: Sees every response that arrives, before it is checked: the cache's hook.
    observe: Callable[[httpx.Response], None] | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = self.headers
        trace = current_trace_headers()  # the caller's trace, which fastctx's spans join
        if trace:
            headers = {**trace, **headers}
        return http.build_request(
            self.method, self.path, params=self.params, headers=headers, content=self.content
        )


def _body(data: Any, media_type: str = JSON) -> tuple[bytes, dict[str, str]]:
    return msgspec.json.encode(data), {"Content-Type": media_type}


def _if_match(headers: dict[str, str], if_version: int | None) -> dict[str, str]:
    if if_version is not None:
        headers["If-Match"] = f'"{if_version}"'
    return headers


def _field(name: str) -> Callable[[httpx.Response], Any]:
    return lambda response: msgspec.json.decode(response.content)[name]


def _document(response: httpx.Response) -> Any:
    return msgspec.json.decode(response.content)


def _item(item: Any) -> Any:
    """One mget item: its data; the error a path or a slice met there, as an exception object
    (returned, not raised); None for an unknown context."""
    if item is None:
        return None
    if "error" in item:
        problem = item["error"]
        slug = str(problem.get("type", "")).removeprefix(SLUG_PREFIX)
        cls = BY_SLUG.get(slug, FastctxError)
        return cls(str(problem.get("detail", "")))
    return item["data"]


def _items(response: httpx.Response) -> list[Any]:
    return [_item(item) for item in msgspec.json.decode(response.content)["items"]]


def slice_text(value: Slice) -> str:
    """A slice as the query parameter says it: "start:end", either side possibly empty."""
    if isinstance(value, str):
        return value
    if value.step not in (None, 1):
        raise ValueError("a slice of a context's array takes no step")
    start, stop = (None if b is None else operator.index(b) for b in (value.start, value.stop))
    return f"{'' if start is None else start}:{'' if stop is None else stop}"


def _read_params(path: str | None, slice_: Slice | None) -> dict[str, str]:
    params = {} if path is None else {"path": path}
    if slice_ is not None:
        params["slice"] = slice_text(slice_)
    return params


def _bounds(text: str) -> tuple[int | None, int | None]:
    start, _, end = text.partition(":")
    return (int(start) if start else None, int(end) if end else None)


def _part(payload: bytes, params: dict[str, str]) -> Any:
    """The part of a held document a read names, as the server would cut it from the same
    version: what a 304 to a partial read means."""
    bounds = _bounds(params["slice"]) if "slice" in params else None
    try:
        return msgspec.json.decode(_core.select(payload, params.get("path", ""), bounds))
    except _core.PathNotFound as exc:
        raise PathNotFound(str(exc)) from None
    except _core.SelectError as exc:
        raise BadRequest(str(exc)) from None


def _params(**values: object) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


# 412 too: a failed If-Match says this client's idea of the version is out of date.
GONE = (404, 412)


def _forgets(token: str, cache: ClientCache | None) -> Callable[[httpx.Response], None] | None:
    """A hook that drops the cached document when the server says the context is gone."""
    if cache is None:
        return None

    def observe(response: httpx.Response) -> None:
        if response.status_code in GONE:
            cache.drop(token)

    return observe


def create_call(
    data: Any, ttl: int | None, session: str | None, cache: ClientCache | None = None
) -> Call[str]:
    content, headers = _body(data)
    params = _params(ttl=ttl, session=session)

    def created(response: httpx.Response) -> str:
        token: str = msgspec.json.decode(response.content)["token"]
        if cache is not None:
            cache.store(token, 1, content)
        return token

    return Call("POST", "/v1/contexts", created, False, params, headers, content)


def get_call(
    token: str,
    cache: ClientCache | None = None,
    path: str | None = None,
    slice_: Slice | None = None,
    version: int | None = None,
) -> Call[Any]:
    path_ = f"/v1/contexts/{token}"
    params = _read_params(path, slice_)
    if version is not None:
        # An earlier version is read as it is: never held, and its 410 (no longer kept, see
        # VersionGone) says nothing of the document this client holds.
        params["version"] = str(version)
        return Call("GET", path_, _document, True, params)
    if cache is None:
        return Call("GET", path_, _document, True, params)
    held = cache.lookup(token)
    headers = {} if held is None else {"If-None-Match": f'"{held.version}"'}

    def observe(response: httpx.Response) -> None:
        if response.status_code in GONE and not _path_not_found(response):
            cache.drop(token)
        elif response.status_code == 200 and not params:  # only whole documents are held
            version = version_of(response)
            if version is not None:
                cache.store(token, version, response.content)

    def document(response: httpx.Response) -> Any:
        if response.status_code == 304 and held is not None:
            return _part(held.payload, params) if params else held.document()
        return _document(response)

    return Call("GET", path_, document, True, params, headers, observe=observe)


def _path_not_found(response: httpx.Response) -> bool:
    """A 404 that says the context is there, but not the value a read's path names."""
    if response.status_code != 404:
        return False
    try:
        problem = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return False
    return isinstance(problem, dict) and problem.get("type") == SLUG_PREFIX + PathNotFound.slug


def put_call(
    token: str, data: Any, if_version: int | None, cache: ClientCache | None = None
) -> Call[int]:
    content, headers = _body(data)
    path = f"/v1/contexts/{token}"

    def replaced(response: httpx.Response) -> int:
        version: int = msgspec.json.decode(response.content)["version"]
        if cache is not None:
            cache.store(token, version, content)
        return version

    headers = _if_match(headers, if_version)
    observe = _forgets(token, cache)
    return Call("PUT", path, replaced, True, {}, headers, content, observe)


def patch_call(
    token: str, merge_patch: Any, if_version: int | None, cache: ClientCache | None = None
) -> Call[int]:
    content, headers = _body(merge_patch, MERGE_PATCH)
    path = f"/v1/contexts/{token}"

    def patched(response: httpx.Response) -> int:
        version: int = msgspec.json.decode(response.content)["version"]
        if cache is not None:
            cache.patched(token, version, content)
        return version

    headers = _if_match(headers, if_version)
    observe = _forgets(token, cache)
    return Call("PATCH", path, patched, False, {}, headers, content, observe)


def json_patch_call(
    token: str, operations: list[Any], if_version: int | None, cache: ClientCache | None = None
) -> Call[int]:
    content, headers = _body(operations, JSON_PATCH)

    def patched(response: httpx.Response) -> int:
        if cache is not None:
            cache.drop(token)  # the held copy is a version behind now
        version: int = msgspec.json.decode(response.content)["version"]
        return version

    headers = _if_match(headers, if_version)
    observe = _forgets(token, cache)
    # Not idempotent in general: an "add" to an array sent twice adds twice.
    return Call("PATCH", f"/v1/contexts/{token}", patched, False, {}, headers, content, observe)


def delete_call(token: str, cache: ClientCache | None = None) -> Call[None]:
    def deleted(response: httpx.Response) -> None:
        if cache is not None:
            cache.drop(token)

    observe = _forgets(token, cache)
    return Call("DELETE", f"/v1/contexts/{token}", deleted, True, observe=observe)


def mget_call(
    tokens: list[str], path: str | None = None, slice_: Slice | None = None
) -> Call[list[Any]]:
    content, headers = _body({"tokens": tokens})
    params = _read_params(path, slice_)
    # A POST, but a pure read: repeating it is harmless.
    return Call("POST", "/v1/contexts/mget", _items, True, params, headers, content)


def append_call(
    token: str,
    path: str,
    items: tuple[Any, ...],
    if_version: int | None,
    cache: ClientCache | None = None,
) -> Call[int]:
    content, headers = _body(list(items))

    def appended(response: httpx.Response) -> int:
        if cache is not None:
            cache.drop(token)  # the held copy is a version behind now
        version: int = msgspec.json.decode(response.content)["version"]
        return version

    headers = _if_match(headers, if_version)
    observe = _forgets(token, cache)
    # Not idempotent: an append sent twice appends twice.
    path_ = f"/v1/contexts/{token}/append"
    return Call("POST", path_, appended, False, {"path": path}, headers, content, observe)


def session_call(ttl: int | None, meta: dict[str, Any] | None) -> Call[str]:
    body: dict[str, Any] = {}
    if ttl is not None:
        body["ttl"] = ttl
    if meta is not None:
        body["meta"] = meta
    content, headers = _body(body)
    return Call("POST", "/v1/sessions", _field("session"), False, {}, headers, content)


def _retry_after(response: httpx.Response) -> int:
    try:
        return max(0, int(response.headers.get("Retry-After", "1")))
    except ValueError:  # an HTTP date: rare enough that a second is a fine guess
        return 1


def error_for(response: httpx.Response) -> FastctxError:
    """The fastctx error a non-2xx response stands for, with the server's detail."""
    status = response.status_code
    detail, slug = "", ""
    try:
        problem = msgspec.json.decode(response.content)
        if isinstance(problem, dict):
            detail = str(problem.get("detail") or problem.get("title") or "")
            slug = str(problem.get("type", "")).removeprefix(SLUG_PREFIX)
    except msgspec.DecodeError:
        detail = response.text[:200]
    cls = BY_SLUG.get(slug)
    if cls is None or cls.status != status:
        cls = BY_STATUS.get(status, FastctxError)
    detail = detail or f"HTTP {status}"
    if issubclass(cls, Unavailable | RateLimited):
        return cls(detail, retry_after=_retry_after(response))
    return cls(detail)


def check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_for(response)


def decode(call: Call[T], response: httpx.Response) -> T:
    if call.observe is not None:
        call.observe(response)
    check(response)
    status = response.status_code
    try:
        if 300 <= status < 400 and status != 304:
            raise ValueError("a redirect")  # fastctx never redirects
        return call.decode(response)
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        kind = response.headers.get("content-type", "no content type")
        raise not_fastctx(f"HTTP {status}, {kind}") from exc


def not_fastctx(what: str) -> FastctxError:
    """An answer that fastctx would never give: base_url is wrong, or a proxy answered."""
    return FastctxError(f"not a fastctx answer: {what}")


def unreachable(base_url: str, exc: Exception) -> Unavailable:
    return Unavailable(f"cannot reach {base_url}: {type(exc).__name__}: {exc}")


def backoff(attempt: int, error: Unavailable, honour_retry_after: bool) -> float:
    """Exponential backoff with full jitter, but never sooner than the server asked."""
    delay = random.uniform(0, min(MAX_BACKOFF, BASE_BACKOFF * 2**attempt))
    if honour_retry_after:
        delay = max(delay, min(float(error.retry_after), MAX_BACKOFF))
    return delay


def should_retry(call: Call[Any], attempt: int, retries: int) -> bool:
    # PATCH and POST are not idempotent: a 503 or a lost answer may hide a write that happened.
    return call.idempotent and attempt < retries


def events_path(token: str | None, session: str | None) -> str:
    if (token is None) == (session is None):
        raise ValueError("events() needs exactly one of token= or session=")
    return f"/v1/contexts/{token}/events" if token else f"/v1/sessions/{session}/events"


def events_params(include: str | Sequence[str] | None, include_data: bool) -> dict[str, str]:
    """The query of an events() call: `include` ("data", "patch" or both), as one parameter."""
    names = [include] if isinstance(include, str) else list(include or ())
    if include_data:
        names.append("data")
    return {"include": ",".join(dict.fromkeys(names))} if names else {}


@dataclass(frozen=True)
class Connected:
    """What an event stream yields, among its events, each time it (re)connects: from here on
    the server follows the stream. `resumed`: it went on from the last event received."""

    resumed: bool


_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class SseLines:
    """Splits an event stream's text into lines where SSE ends them: CRLF, LF or CR only.

    Not httpx's iter_lines, which is str.splitlines and also splits at characters that a JSON
    string may hold (U+2028, U+0085, ...), cutting an event in two.
    """

    _rest: str = ""
    _after_cr: bool = False

    def feed(self, text: str) -> list[str]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split between two chunks
        self._after_cr = text.endswith("\r")
        lines = _LINE_END.split(self._rest + text)
        self._rest = lines.pop()
        return lines


@dataclass
class SseParser:
    """Turns SSE lines into Events; remembers the last id so a reconnect can resume there."""

    ends_on_delete: bool
    last_id: str | None = None
    finished: bool = False
    #: Seconds to wait before reconnecting after the server ended the stream (its `retry:`).
    retry: float = 1.0
    _id: str | None = None
    _type: str = "message"
    _data: list[str] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def feed(self, line: str) -> Event | None:
        """One line without its ending; an Event when a blank line completes one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, such as the server's `: ping`
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> Event | None:
        event_id, kind, data = self._id, self._type, "\n".join(self._data)
        self._id, self._type, self._data = None, "message", []
        if event_id is None or not data:
            return None  # e.g. the `retry:` preamble
        self.last_id = event_id
        fields = msgspec.json.decode(data)
        # A context's stream has nothing more to say once the context is gone; a session's,
        # once the session itself is (its own event names no context).
        token = fields.get("token")
        if kind in ("deleted", "expired") and (self.ends_on_delete or token is None):
            self.finished = True
        return Event(
            event_id,
            kind,
            token,
            int(fields["version"]),
            fields.get("session"),
            fields.get("data"),
            fields.get("patch"),
            fields.get("resync") is True,
        )


def stream_timeout(timeout: float) -> httpx.Timeout:
    return httpx.Timeout(timeout, read=STREAM_READ_TIMEOUT)


# What a dropped stream looks like: the network failed, or the response was closed under us.
STREAM_DROPS = (httpx.TransportError, httpx.StreamError)


# --- watch(): a copy of one context kept current from its change stream ----------------------


def read_call(token: str) -> Call[tuple[bytes, int]]:
    """The document as stored and its version, past the node's cache (what watch() reads)."""

    def read(response: httpx.Response) -> tuple[bytes, int]:
        version = version_of(response)
        if version is None:
            raise ValueError("no version in the ETag")
        return response.content, version

    path = f"/v1/contexts/{token}"
    return Call("GET", path, read, True, headers={"Cache-Control": "no-cache"})


class Step(enum.Enum):
    """What the client does after the Follower took a read or an event."""

    SKIP = "skip"  # nothing new in the copy
    NEW = "new"  # the copy moved on: hand it out
    READ = "read"  # read the whole context again
    GONE = "gone"  # the context was deleted or expired: stop


class Follower:
    """The copy that watch() keeps: the document as bytes, and its version.

    An event applies when it is the next version and carries its patch; one that is behind the
    copy was in the last read already; anything else (a gap, as after a resume the server could
    not serve in full, or `resync`) calls for a read of the whole context.
    """

    def __init__(self) -> None:
        self.payload = b"null"
        self.version = 0  # none read yet

    def document(self) -> Any:
        """A fresh decoding of the copy: the caller may change what it gets."""
        return msgspec.json.decode(self.payload)

    def read(self, found: tuple[bytes, int]) -> Step:
        payload, version = found
        if version <= self.version:
            return Step.SKIP
        self.payload, self.version = payload, version
        return Step.NEW

    def take(self, event: Event) -> Step:
        if event.type in ("deleted", "expired"):
            return Step.GONE
        if event.version <= self.version:
            return Step.SKIP
        if event.version != self.version + 1 or event.resync or event.patch is None:
            return Step.READ
        try:
            self.payload = _core.json_patch(self.payload, msgspec.json.encode(event.patch))
        except ValueError:  # a patch that does not fit the copy: the copy is not what it was
            return Step.READ
        self.version = event.version
        return Step.NEW
