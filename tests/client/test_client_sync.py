"""fastctx.Client against real granian servers (memory and Redis backends)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from fastctx import (
    BadRequest,
    Client,
    FastctxError,
    InvalidPatch,
    NotFound,
    PathNotFound,
    Unauthorized,
    Unavailable,
    VersionConflict,
    VersionGone,
)
from fastctx.errors import BackendError
from support.pool import ServerPool
from support.ports import free_port


@pytest.fixture(params=["memory", "redis"])
def base_url(server_pool: ServerPool, request: pytest.FixtureRequest) -> str:
    return server_pool.granian(request.param).base_url


@pytest.fixture
def fc(base_url: str) -> Iterator[Client]:
    with Client(base_url) as client:
        yield client


def later(action: Callable[[], Any], delay: float = 0.3) -> threading.Thread:
    """Run `action` on a thread after `delay`: the stream under test blocks this one."""

    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_earlier_versions(base_url: str) -> None:
    """Read as they are, past the client's cache: a 410 leaves the held document alone."""
    with Client(base_url, cache_size=16) as fc:
        token = fc.create({"messages": []})
        for n in range(3):
            fc.append(token, "/messages", {"n": n})
        assert fc.get(token) == {"messages": [{"n": n} for n in range(3)]}
        assert fc.get(token, version=2) == {"messages": [{"n": 0}]}
        assert fc.get(token, version=1) == {"messages": []}
        fc.put(token, {"messages": ["whole"]})
        with pytest.raises(VersionGone):
            fc.get(token, version=2)
        assert fc.get(token) == {"messages": ["whole"]}


def test_create_get_put_patch_delete(fc: Client) -> None:
    token = fc.create({"order": 42, "items": ["apple"]}, ttl=60)
    assert len(token) == 22
    assert fc.get(token) == {"order": 42, "items": ["apple"]}
    assert fc.put(token, {"order": 43}) == 2
    assert fc.patch(token, {"paid": True}, if_version=2) == 3
    assert fc.get(token) == {"order": 43, "paid": True}
    assert fc.put(token, [1, 2], if_version=3) == 4
    fc.delete(token)
    with pytest.raises(NotFound):
        fc.get(token)


def test_json_patch_applies_all_of_its_operations_or_none(fc: Client) -> None:
    token = fc.create({"a": 1, "list": [1]})
    operations = [{"op": "add", "path": "/b", "value": None}, {"op": "remove", "path": "/a"}]
    assert fc.json_patch(token, operations) == 2
    assert fc.get(token) == {"b": None, "list": [1]}  # a null kept, as a merge patch cannot
    failing = [{"op": "add", "path": "/c", "value": 3}, {"op": "test", "path": "/b", "value": 0}]
    with pytest.raises(InvalidPatch):
        fc.json_patch(token, failing)
    with pytest.raises(VersionConflict):
        fc.json_patch(token, [{"op": "add", "path": "/list/-", "value": 2}], if_version=1)
    assert fc.get(token) == {"b": None, "list": [1]}  # neither changed anything
    assert fc.json_patch(token, [{"op": "add", "path": "/list/-", "value": 2}], 2) == 3
    assert fc.get(token, "/list") == [1, 2]


def test_any_json_value_round_trips(fc: Client) -> None:
    for value in ["text", 7, None, [1, {"a": "é"}], {"nested": {"deep": [True]}}]:
        assert fc.get(fc.create(value)) == value


def test_mget_keeps_order_and_marks_missing(fc: Client) -> None:
    first, second = fc.create({"n": 1}), fc.create({"n": 2})
    missing = fc.create({"n": 3})
    fc.delete(missing)
    assert fc.mget([second, missing, first]) == [{"n": 2}, None, {"n": 1}]
    assert fc.mget([]) == []


def test_create_session_groups_contexts(fc: Client, base_url: str) -> None:
    session = fc.create_session(ttl=120, meta={"user": "ada"})
    token = fc.create({"turn": 1}, session=session)
    body = httpx.get(f"{base_url}/v1/sessions/{session}").json()
    assert body["meta"] == {"user": "ada"}
    assert body["contexts"] == [token]


def test_not_found_carries_the_server_detail(fc: Client) -> None:
    with pytest.raises(NotFound) as caught:
        fc.get("0" * 22)
    assert caught.value.status == 404
    assert caught.value.detail
    assert isinstance(caught.value, FastctxError)
    for call in (lambda: fc.delete("0" * 22), lambda: fc.put("0" * 22, {})):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(NotFound):
        fc.create({}, session="0" * 22)


def test_version_conflict_on_put_patch(fc: Client) -> None:
    token = fc.create({"a": 1})
    with pytest.raises(VersionConflict) as caught:
        fc.put(token, {"a": 2}, if_version=5)
    assert caught.value.status == 412
    with pytest.raises(VersionConflict):
        fc.patch(token, {"a": 3}, if_version=2)
    assert fc.get(token) == {"a": 1}  # nothing changed


def test_unauthorized_and_tenants(server_pool: ServerPool) -> None:
    url = server_pool.granian("memory", "tenants").base_url
    with Client(url) as anonymous, pytest.raises(Unauthorized) as caught:
        anonymous.create({})
    assert caught.value.status == 401
    with Client(url, "wrong-key") as wrong, pytest.raises(Unauthorized):
        wrong.get("0" * 22)
    with Client(url, "key-acme") as acme, Client(url, "key-globex") as globex:
        token = acme.create({"secret": 1})
        assert acme.get(token) == {"secret": 1}
        with pytest.raises(NotFound):
            globex.get(token)


def test_backend_down_is_unavailable_with_retry_after(server_pool: ServerPool) -> None:
    url = server_pool.granian("down", "down").base_url
    with Client(url, retries=0) as client:
        with pytest.raises(Unavailable) as caught:
            client.create({"a": 1})
        assert caught.value.status == 503
        assert caught.value.retry_after >= 1
        assert isinstance(caught.value, BackendError)
        with pytest.raises(Unavailable):
            client.get("0" * 22)


def test_idempotent_get_retries_after_retry_after(server_pool: ServerPool) -> None:
    url = server_pool.granian("down", "down").base_url
    with Client(url, retries=1) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            client.get("0" * 22)
        assert time.monotonic() - started >= 0.9  # waited the server's Retry-After once


def test_connection_refused_is_unavailable() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", retries=1) as client:
        with pytest.raises(Unavailable) as caught:
            client.get("0" * 22)
        assert "cannot reach" in caught.value.detail


def requests_seen(base_url: str, route: str, method: str) -> int:
    """How many requests the server itself counted for a route and method (its /metrics)."""
    total = 0
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if (
            line.startswith("fastctx_requests_total{")
            and f'route="{route}"' in line
            and f'method="{method}"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


ITEM = "/v1/contexts/{token}"


def test_only_idempotent_calls_are_retried(server_pool: ServerPool) -> None:
    """Against a real server whose Redis is down (503, Retry-After): the server counts."""
    url = server_pool.granian("down", "down").base_url
    token = "0" * 22
    with Client(url, retries=1) as client:
        retried: list[tuple[str, str, Callable[[], Any]]] = [
            ("GET", ITEM, lambda: client.get(token)),
            ("PUT", ITEM, lambda: client.put(token, {})),
            ("DELETE", ITEM, lambda: client.delete(token)),
            ("POST", "/v1/contexts/mget", lambda: client.mget([token])),
        ]
        sent_once: list[tuple[str, str, Callable[[], Any]]] = [
            ("PATCH", ITEM, lambda: client.patch(token, {})),
            ("POST", "/v1/contexts", lambda: client.create({})),
            ("POST", "/v1/sessions", lambda: client.create_session()),
            ("POST", f"{ITEM}/append", lambda: client.append(token, "/log", 1)),
        ]
        for expected, calls in ((2, retried), (1, sent_once)):
            for method, route, call in calls:
                before = requests_seen(url, route, method)
                with pytest.raises(Unavailable):
                    call()
                assert requests_seen(url, route, method) - before == expected, (method, route)


def test_events_receive_a_change_with_data(fc: Client, base_url: str) -> None:
    token = fc.create({"step": 1})
    with fc.events(token=token, include_data=True) as stream:
        writer = later(lambda: fc.patch(token, {"step": 2}))
        event = next(stream)
        writer.join()  # the event may arrive before the writer hears its answer
    assert (event.type, event.token, event.version) == ("updated", token, 2)
    assert event.data == {"step": 2}
    assert event.session is None
    assert event.id


def test_events_include_the_patch_of_each_version(fc: Client) -> None:
    token = fc.create({"step": 1})
    with fc.events(token=token, include=["data", "patch"], last_event_id="0-0") as stream:
        created = next(stream)
        writer = later(lambda: fc.put(token, {"step": 2}))
        updated = next(stream)
        writer.join()
    assert (created.type, created.data, created.patch) == ("created", {"step": 1}, None)
    assert (updated.type, updated.data) == ("updated", {"step": 2})
    assert updated.patch == [{"op": "replace", "path": "", "value": {"step": 2}}]
    assert not updated.resync


def test_events_resume_after_a_dropped_connection(fc: Client) -> None:
    token = fc.create({"n": 0})
    stream = fc.events(token=token)
    writer = later(lambda: fc.put(token, {"n": 1}))
    assert next(stream).version == 2
    writer.join()
    assert stream.response is not None
    stream.response.close()  # the connection drops; these writes happen while nobody listens
    fc.put(token, {"n": 2})
    fc.put(token, {"n": 3})
    fc.delete(token)
    rest = list(stream)  # resumes with Last-Event-ID; ends with the context's deletion
    assert [(e.type, e.version) for e in rest] == [("updated", 3), ("updated", 4), ("deleted", 4)]


def test_session_events(fc: Client) -> None:
    session = fc.create_session()
    tokens: list[str] = []
    with fc.events(session=session) as stream:
        writer = later(lambda: tokens.append(fc.create({"x": 1}, session=session)))
        event = next(stream)
        writer.join()  # the event may arrive before the writer hears its answer
    assert event.session == session
    assert [event.token] == tokens


def test_events_of_unknown_context_is_not_found(fc: Client) -> None:
    with pytest.raises(NotFound):
        next(fc.events(token="0" * 22))
    with pytest.raises(ValueError, match="exactly one"):
        fc.events()


def test_events_from_a_kept_id_replay_what_came_before(fc: Client) -> None:
    session = fc.create_session()
    first = fc.create({"n": 1}, session=session)
    fc.patch(first, {"n": 2})
    with fc.events(session=session, include_data=True, last_event_id="0-0") as stream:
        replayed = [next(stream), next(stream)]
    assert [(e.token, e.version) for e in replayed] == [(first, 1), (first, 2)]
    assert replayed[1].data == {"n": 2}
    with fc.events(session=session, last_event_id=replayed[0].id) as stream:
        assert next(stream).version == 2  # resumes just after the id it was given


def test_get_part_of_a_context(fc: Client) -> None:
    token = fc.create({"messages": [{"n": i} for i in range(5)], "user": {"a/b": "é"}})
    assert fc.get(token, "/messages/0") == {"n": 0}
    assert fc.get(token, "/user/a~1b") == "é"
    assert fc.get(token, "/messages", "-2:") == [{"n": 3}, {"n": 4}]
    assert fc.get(token, "/messages", slice(-2, None)) == [{"n": 3}, {"n": 4}]
    assert fc.get(token, path="/messages", slice=slice(1, 3)) == [{"n": 1}, {"n": 2}]
    assert fc.get(token, "/messages", slice(None, None)) == [{"n": i} for i in range(5)]
    assert fc.get(fc.create([1, 2, 3]), slice=":-1") == [1, 2]
    with pytest.raises(PathNotFound, match="nothing at /nothing"):
        fc.get(token, "/nothing")
    with pytest.raises(NotFound) as gone:
        fc.get("0" * 22, "/messages")
    assert type(gone.value) is NotFound
    with pytest.raises(BadRequest, match="JSON Pointer"):
        fc.get(token, "messages")
    with pytest.raises(BadRequest, match="needs an array"):
        fc.get(token, "/user", ":")
    with pytest.raises(ValueError, match="no step"):
        fc.get(token, "/messages", slice(None, None, 2))


def test_mget_parts(fc: Client) -> None:
    first, second = fc.create({"log": [1, 2, 3]}), fc.create({"other": True})
    items = fc.mget([first, "0" * 22, second], "/log", "-1:")
    assert items[:2] == [[3], None]
    assert isinstance(items[2], PathNotFound)
    assert "nothing at /log" in items[2].detail
    (not_array,) = fc.mget([first], slice=":")
    assert type(not_array) is BadRequest
    assert "needs an array" in not_array.detail


def test_append(fc: Client) -> None:
    token = fc.create({"chat": {}})
    assert fc.append(token, "/chat/messages", {"role": "user", "text": "hi"}) == 2
    assert fc.append(token, "/chat/messages", "two", ["three"], if_version=2) == 3
    assert fc.get(token, "/chat/messages") == [{"role": "user", "text": "hi"}, "two", ["three"]]
    with pytest.raises(VersionConflict):
        fc.append(token, "/chat/messages", 4, if_version=2)
    with pytest.raises(InvalidPatch, match="not an array"):
        fc.append(token, "/chat", 4)
    with pytest.raises(NotFound):
        fc.append("0" * 22, "/chat", 4)
    root = fc.create([])
    assert fc.append(root, "", 1, 2) == 2
    assert fc.append(root, "") == 3  # nothing to add is still a write
    assert fc.get(root) == [1, 2]
