"""The client's shared pieces on their own: the SSE parser and the error mapping."""

from __future__ import annotations

import httpx
import pytest

from fastctx.client._common import SseParser, backoff, error_for, slice_text
from fastctx.errors import (
    BackendError,
    FastctxError,
    MalformedJson,
    NotFound,
    PathNotFound,
    Unavailable,
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
