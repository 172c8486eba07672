"""The client's shared pieces on their own: the SSE parser and the error mapping."""

from __future__ import annotations

import httpx
import pytest

import fastctx
from fastctx.client._common import (
    Event,
    Follower,
    SseLines,
    SseParser,
    Step,
    backoff,
    error_for,
    events_params,
    slice_text,
)
from fastctx.errors import (
    BackendError,
    FastctxError,
    MalformedJson,
    NotFound,
    PathNotFound,
    Unavailable,
    VersionGone,
)


def feed(parser: SseParser, text: str) -> list[tuple[str, int, object]]:
    events = (parser.feed(line) for line in text.split("\n"))
    return [(e.type, e.version, e.data) for e in events if e is not None]


def test_parser_skips_pings_and_preamble_and_joins_data_lines() -> None:
    parser = SseParser(ends_on_delete=True)
    text = (
        "retry: 250\n\n: ping\n\n"
        'id: 5-0\nevent: updated\ndata: {"token":"t","version":2,"session":null,"data":{"a":\n'
        "data: [1,\ndata: 2]}}\n\n"
    )
    assert feed(parser, text) == [("updated", 2, {"a": [1, 2]})]
    assert (parser.last_id, parser.retry, parser.finished) == ("5-0", 0.25, False)
    assert parser.headers()["Last-Event-ID"] == "5-0"


@pytest.mark.parametrize("kind", ["deleted", "expired"])
def test_context_stream_finishes_when_the_context_is_gone(kind: str) -> None:
    parser = SseParser(ends_on_delete=True)
    feed(parser, f'id: 7-1\nevent: {kind}\ndata: {{"token":"t","version":3,"session":"s"}}\n')
    assert parser.finished
    session = SseParser(ends_on_delete=False)
    feed(session, f'id: 7-1\nevent: {kind}\ndata: {{"token":"t","version":3,"session":"s"}}\n')
    assert not session.finished


def problem(status: int, slug: str = "", **headers: str) -> httpx.Response:
    body = {"type": f"urn:fastctx:problem:{slug}", "status": status, "detail": "why"}
    return httpx.Response(status, json=body, headers=headers)


def test_error_for_picks_the_most_precise_class() -> None:
    assert type(error_for(problem(404, "not-found"))) is NotFound
    assert type(error_for(problem(404, "path-not-found"))) is PathNotFound
    assert type(error_for(problem(400, "malformed-json"))) is MalformedJson
    down = error_for(problem(503, "backend-unavailable", **{"Retry-After": "7"}))
    assert isinstance(down, BackendError)
    assert (down.retry_after, down.detail) == (7, "why")
    assert type(error_for(problem(503))) is Unavailable  # no slug: the status decides
    # 410: a version no longer kept, by its type or, from a proxy that drops it, its status.
    assert type(error_for(problem(410, "version-gone"))) is VersionGone
    assert type(error_for(httpx.Response(410, text="gone"))) is VersionGone
    assert fastctx.VersionGone is VersionGone
    assert (VersionGone.status, VersionGone.title) == (410, "Version no longer kept")
    teapot = error_for(httpx.Response(418, text="not json"))
    assert type(teapot) is FastctxError
    assert teapot.detail == "not json"


def test_backoff_grows_and_honours_retry_after() -> None:
    assert all(backoff(0, Unavailable(retry_after=3), False) <= 0.05 for _ in range(50))
    assert backoff(0, Unavailable(retry_after=3), True) == 3.0
    assert backoff(0, Unavailable(retry_after=3600), True) == 10.0  # capped


def test_session_stream_finishes_with_the_sessions_own_event() -> None:
    parser = SseParser(ends_on_delete=False)
    text = 'id: 9-0\nevent: expired\ndata: {"token":null,"version":0,"session":"s"}\n\n'
    events = [e for e in map(parser.feed, text.split("\n")) if e is not None]
    assert [(e.type, e.token, e.session) for e in events] == [("expired", None, "s")]
    assert parser.finished


def test_sse_lines_end_only_at_cr_and_lf() -> None:
    """U+2028, U+0085 and the like may sit in a JSON string: they end no SSE line."""
    lines = SseLines()
    assert lines.feed('data: {"a":"x\u2028y\x85z"}\r') == ['data: {"a":"x\u2028y\x85z"}']
    assert lines.feed("\nid: 1-") == []  # the LF of that CRLF, then part of a line
    assert lines.feed("0\n\n") == ["id: 1-0", ""]
    assert lines.feed("a\rb\r\nc") == ["a", "b"]
    assert lines.feed("\n") == ["c"]


def test_events_ask_for_what_they_include() -> None:
    assert events_params(None, False) == {}
    assert events_params(None, True) == {"include": "data"}
    assert events_params("patch", False) == {"include": "patch"}
    assert events_params(["data", "patch"], True) == {"include": "data,patch"}
    assert events_params(("patch",), True) == {"include": "patch,data"}


def test_the_parser_reads_patch_and_resync() -> None:
    parser = SseParser(ends_on_delete=True)
    text = (
        'id: 1-0\nevent: updated\ndata: {"token":"t","version":2,"session":null,'
        '"patch":[{"op":"add","path":"/a","value":1}]}\n\n'
        'id: 1-1\nevent: updated\ndata: {"token":"t","version":3,"session":null,'
        '"resync":true}\n\n'
    )
    events = [e for e in map(parser.feed, text.split("\n")) if e is not None]
    assert [(e.version, e.patch, e.resync) for e in events] == [
        (2, [{"op": "add", "path": "/a", "value": 1}], False),
        (3, None, True),
    ]


def event(kind: str, version: int, patch: object = None, resync: bool = False) -> Event:
    return Event(f"{version}-0", kind, "t", version, patch=patch, resync=resync)


def test_a_follower_applies_the_next_version_and_reads_again_after_a_gap() -> None:
    follower = Follower()
    assert follower.read((b'{"a": 0}', 1)) is Step.NEW
    assert follower.take(event("created", 1)) is Step.SKIP  # the read had it
    add = [{"op": "add", "path": "/b", "value": [1]}]
    assert follower.take(event("updated", 2, add)) is Step.NEW
    assert (follower.document(), follower.version) == ({"a": 0, "b": [1]}, 2)
    assert follower.take(event("updated", 2, add)) is Step.SKIP  # seen already
    assert follower.take(event("updated", 4, add)) is Step.READ  # 3 is missing
    assert follower.take(event("updated", 3, resync=True)) is Step.READ
    assert follower.take(event("updated", 3)) is Step.READ  # no patch
    remove = [{"op": "remove", "path": "/nothing"}]
    assert follower.take(event("updated", 3, remove)) is Step.READ  # does not fit the copy
    assert follower.version == 2  # none of these changed it
    assert follower.read((b'{"a": 0}', 2)) is Step.SKIP  # not newer
    assert follower.read((b'{"c": 3}', 5)) is Step.NEW
    assert follower.document() == {"c": 3}
    assert follower.take(event("deleted", 5)) is Step.GONE
    assert follower.take(event("expired", 5)) is Step.GONE


def test_slices_are_sent_as_start_end() -> None:
    assert slice_text(slice(-20, None)) == "-20:"
    assert slice_text(slice(None, 5)) == ":5"
    assert slice_text(slice(None, None)) == ":"
    assert slice_text(slice(2, -1, 1)) == "2:-1"
    assert slice_text("1:2") == "1:2"  # a string goes as it is: the server judges it
    with pytest.raises(ValueError, match="no step"):
        slice_text(slice(None, None, -1))
    with pytest.raises(TypeError):
        slice_text(slice(1.5, None))
