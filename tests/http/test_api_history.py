"""GET /v1/contexts/{token}?version=N: earlier versions while the log keeps them, 410 after,
and /meta's oldest_version; on every backend, in process and through granian."""

from __future__ import annotations

import httpx
import pytest
from contract import JSON_PATCH, UNKNOWN_TOKEN, assert_problem, create


def append(client: httpx.Client, token: str, n: int) -> int:
    patch = [{"op": "add", "path": "/messages/-", "value": {"n": n}}]
    r = client.patch(f"/v1/contexts/{token}", json=patch, headers=JSON_PATCH)
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def test_every_version_reads_as_it_was(client: httpx.Client) -> None:
    token = create(client, raw=b'{ "messages" : [] }')
    for n in range(2, 8):
        assert append(client, token, n) == n
    first = client.get(f"/v1/contexts/{token}", params={"version": 1})
    assert first.status_code == 200
    assert first.content == b'{ "messages" : [] }'  # as stored
    assert first.headers["etag"] == '"1"'
    for version in range(2, 8):
        r = client.get(f"/v1/contexts/{token}", params={"version": version})
        assert r.json() == {"messages": [{"n": n} for n in range(2, version + 1)]}
        assert r.headers["etag"] == f'"{version}"'
    # with a path and slice, of that version
    r = client.get(
        f"/v1/contexts/{token}", params={"version": 5, "path": "/messages", "slice": "-2:"}
    )
    assert (r.status_code, r.json()) == (200, [{"n": 4}, {"n": 5}])
    # If-None-Match against the version asked for
    r = client.get(f"/v1/contexts/{token}", params={"version": 3}, headers={"If-None-Match": '"3"'})
    assert r.status_code == 304
    head = client.head(f"/v1/contexts/{token}", params={"version": 4})
    assert (head.status_code, head.headers["etag"], head.content) == (200, '"4"', b"")
    assert client.get(f"/v1/contexts/{token}/meta").json()["oldest_version"] == 1


def test_a_version_not_kept_is_410_and_one_to_come_404(client: httpx.Client) -> None:
    token = create(client, {"messages": []})
    append(client, token, 2)
    r = client.put(f"/v1/contexts/{token}", json={"messages": ["new"]})
    assert r.json()["version"] == 3
    problem = assert_problem(client.get(f"/v1/contexts/{token}", params={"version": 2}), 410)
    assert problem["type"] == "urn:fastctx:problem:version-gone"
    assert "oldest is 3" in problem["detail"]
    assert client.get(f"/v1/contexts/{token}/meta").json()["oldest_version"] == 3
    problem = assert_problem(client.get(f"/v1/contexts/{token}", params={"version": 4}), 404)
    assert "at version 3" in problem["detail"]
    assert_problem(client.get(f"/v1/contexts/{UNKNOWN_TOKEN}", params={"version": 1}), 404)


@pytest.mark.parametrize("bad", ["0", "-1", "x", "1.5", "", "99999999999999999999"])
def test_a_malformed_version_is_400(client: httpx.Client, bad: str) -> None:
    token = create(client, {"a": 1})
    problem = assert_problem(client.get(f"/v1/contexts/{token}", params={"version": bad}), 400)
    assert "version" in problem["detail"]


def test_mget_and_writes_take_no_version(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    r = client.post("/v1/contexts/mget", json={"tokens": [token]}, params={"version": 1})
    assert_problem(r, 400)
    r = client.put(f"/v1/contexts/{token}", json={}, params={"version": 1})
    assert_problem(r, 400)
