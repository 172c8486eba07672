"""Contract: sessions group contexts, bound their lifetime, and cascade on delete."""

from __future__ import annotations

import time

import httpx
import pytest
from contract import (
    JSON,
    TOKEN_RE,
    UNKNOWN_TOKEN,
    assert_problem,
    create,
    create_session,
    now,
    parse_ts,
)

DEFAULT_TTL = 86400


def test_create_session_without_body(client: httpx.Client) -> None:
    before = now()
    r = client.post("/v1/sessions")
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"session", "expires_at"}
    assert TOKEN_RE.match(body["session"])
    expires = parse_ts(body["expires_at"])
    assert abs((expires - before).total_seconds() - DEFAULT_TTL) < 30


def test_create_session_with_body(client: httpx.Client) -> None:
    before = now()
    r = client.post("/v1/sessions", json={"ttl": 120, "meta": {"user": "u1", "n": [1, 2]}})
    assert r.status_code == 201, r.text
    sid = r.json()["session"]
    assert abs((parse_ts(r.json()["expires_at"]) - before).total_seconds() - 120) < 5
    g = client.get(f"/v1/sessions/{sid}")
    assert g.status_code == 200
    doc = g.json()
    assert set(doc) == {"session", "created_at", "expires_at", "meta", "contexts"}
    assert doc["session"] == sid
    assert doc["meta"] == {"user": "u1", "n": [1, 2]}
    assert doc["contexts"] == []
    assert abs((parse_ts(doc["created_at"]) - before).total_seconds()) < 30
    # Reading a session slides its expiry: never earlier than what create returned.
    assert parse_ts(doc["expires_at"]) >= parse_ts(r.json()["expires_at"])


def test_session_ids_are_unique(client: httpx.Client) -> None:
    assert len({create_session(client) for _ in range(10)}) == 10


@pytest.mark.parametrize(
    "body",
    [
        b'{"ttl": 0}',
        b'{"ttl": -5}',
        b'{"ttl": "x"}',
        b'{"ttl": 1.5}',
        b'{"meta": 5}',
        b'{"meta": [1]}',
        b"[1]",
        b'"str"',
        b'{"ttl": ',
    ],
)
def test_create_session_bad_body_is_400(client: httpx.Client, body: bytes) -> None:
    assert_problem(client.post("/v1/sessions", content=body, headers=JSON), 400)


def test_contexts_in_a_session(client: httpx.Client) -> None:
    sid = create_session(client)
    t1 = create(client, {"n": 1}, params={"session": sid})
    t2 = create(client, {"n": 2}, params={"session": sid})
    outside = create(client, {"n": 3})
    doc = client.get(f"/v1/sessions/{sid}").json()
    assert sorted(doc["contexts"]) == sorted([t1, t2])
    assert outside not in doc["contexts"]
    assert client.get(f"/v1/contexts/{t1}/meta").json()["session"] == sid
    assert client.get(f"/v1/contexts/{outside}/meta").json()["session"] is None
    # Writes keep the context in its session.
    assert client.put(f"/v1/contexts/{t1}", json={"n": 10}).status_code == 200
    assert client.get(f"/v1/contexts/{t1}/meta").json()["session"] == sid
    assert sorted(client.get(f"/v1/sessions/{sid}").json()["contexts"]) == sorted([t1, t2])


def _wait_404(client: httpx.Client, path: str, timeout: float = 6.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get(path).status_code != 404:
        assert time.monotonic() < deadline, f"{path} still there"
        time.sleep(0.1)


def test_session_expiry_takes_its_contexts(client: httpx.Client) -> None:
    r = client.post("/v1/sessions", json={"ttl": 1})
    sid = r.json()["session"]
    token = create(client, {"short": "session"}, params={"session": sid, "ttl": 3600})
    assert client.get(f"/v1/contexts/{token}").status_code == 200
    _wait_404(client, f"/v1/contexts/{token}")
    _wait_404(client, f"/v1/sessions/{sid}")
    assert_problem(client.post("/v1/contexts", json={}, params={"session": sid}), 404)


def test_reading_a_session_slides_its_expiry(client: httpx.Client) -> None:
    sid = client.post("/v1/sessions", json={"ttl": 2}).json()["session"]
    time.sleep(1.2)
    r = client.get(f"/v1/sessions/{sid}")
    assert r.status_code == 200
    assert abs((parse_ts(r.json()["expires_at"]) - now()).total_seconds() - 2) < 0.5
    time.sleep(1.2)
    # Past the original expiry, alive thanks to the read.
    assert client.get(f"/v1/sessions/{sid}").status_code == 200


def test_session_bounds_the_context_ttl(client: httpx.Client) -> None:
    r = client.post("/v1/sessions", json={"ttl": 120})
    sid = r.json()["session"]
    session_expires = parse_ts(r.json()["expires_at"])
    c = client.post("/v1/contexts", json={"a": 1}, params={"session": sid, "ttl": 3600})
    assert c.status_code == 201
    ctx_expires = parse_ts(c.json()["expires_at"])
    # Never outlives the session (which may have slid by a few ms on create).
    assert (ctx_expires - session_expires).total_seconds() < 5
    assert (ctx_expires - now()).total_seconds() < 130
    meta = client.get(f"/v1/contexts/{c.json()['token']}/meta").json()
    assert meta["expires_at"] == c.json()["expires_at"]


@pytest.mark.parametrize("sid", [UNKNOWN_TOKEN, "nope", "../sessions", "x" * 400])
def test_create_context_in_unknown_session_is_404(client: httpx.Client, sid: str) -> None:
    r = client.post("/v1/contexts", json={"a": 1}, params={"session": sid})
    assert_problem(r, 404)


def test_delete_session_cascades(client: httpx.Client) -> None:
    sid = create_session(client)
    tokens = [create(client, {"n": i}, params={"session": sid}) for i in range(3)]
    outside = create(client, {"n": "outside"})
    for t in tokens:
        assert client.get(f"/v1/contexts/{t}").status_code == 200  # warm caches
    r = client.delete(f"/v1/sessions/{sid}")
    assert r.status_code == 204
    assert r.content == b""
    for t in tokens:
        assert_problem(client.get(f"/v1/contexts/{t}"), 404)
        no_cache = client.get(f"/v1/contexts/{t}", headers={"Cache-Control": "no-cache"})
        assert no_cache.status_code == 404
    r = client.post("/v1/contexts/mget", json={"tokens": tokens})
    assert r.json() == {"items": [None, None, None]}
    assert client.get(f"/v1/contexts/{outside}").status_code == 200
    assert_problem(client.get(f"/v1/sessions/{sid}"), 404)
    assert_problem(client.delete(f"/v1/sessions/{sid}"), 404)
    assert_problem(client.post("/v1/contexts", json={}, params={"session": sid}), 404)


def test_deleted_context_leaves_the_session_list(client: httpx.Client) -> None:
    sid = create_session(client)
    t1 = create(client, {"n": 1}, params={"session": sid})
    t2 = create(client, {"n": 2}, params={"session": sid})
    assert client.delete(f"/v1/contexts/{t1}").status_code == 204
    assert client.get(f"/v1/sessions/{sid}").json()["contexts"] == [t2]


@pytest.mark.parametrize("sid", [UNKNOWN_TOKEN, "short", "!" * 22, "%2e%2e", "a" * 1000])
def test_unknown_or_malformed_session_is_404(client: httpx.Client, sid: str) -> None:
    assert_problem(client.get(f"/v1/sessions/{sid}"), 404)
    assert_problem(client.delete(f"/v1/sessions/{sid}"), 404)
