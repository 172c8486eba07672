"""Contract: bad input is refused with the right problem document and changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from contract import JSON, JSON_PATCH, MERGE, UNKNOWN_TOKEN, assert_problem, create, get_state

from support.pool import SMALL_MAX_BYTES, SMALL_MAX_DOCUMENT

MALFORMED_TOKENS = [
    "short",
    "0AbCdEfGhIjKlMnOpQrStUv",  # 23 characters
    "0AbCdEfGhIjKlMnOpQrSt",  # 21 characters
    "0AbCdEfGhIjKlMnOpQrSt-",  # bad alphabet
    "0AbCdEfGhIjKlMnOpQrSt_",
    "0AbCdEfGhIjKlMnOpQrSt!",
    "0AbCdEfGhIjKlMnOpQrSt%C3%A9",  # a non-ASCII letter
    "%2e%2e",
    "..%2f..%2fhealthz",
    "%2e%2e%2f%2e%2e%2fmetrics",
    "0AbCdEfGhIjKlMnOpQrSt%00",
    "a" * 5000,
    "zzzzzzzzzzzzzzzzzzzzzz",  # right shape, but more than 128 bits
]


def _json_body(size: int) -> bytes:
    """A valid JSON document of exactly `size` bytes."""
    body = b'{"pad": "' + b"x" * (size - 11) + b'"}'
    assert len(body) == size
    return body


# --- malformed JSON, 400 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"{", b'{"a": 1,}', b"{'a': 1}", b"", b"nan", b'{"a": 1} {"b": 2}', b"\xff\xfe"]
)
def test_post_malformed_json_is_400(client: httpx.Client, raw: bytes) -> None:
    assert_problem(client.post("/v1/contexts", content=raw, headers=JSON), 400)


def test_put_malformed_json_is_400_and_changes_nothing(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    state = get_state(client, token)
    assert_problem(client.put(f"/v1/contexts/{token}", content=b'{"a": ', headers=JSON), 400)
    assert get_state(client, token) == state


# --- content type, 415 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "application/merge-patch+json", None],
)
def test_post_wrong_content_type_is_415(client: httpx.Client, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    assert_problem(client.post("/v1/contexts", content=b'{"a": 1}', headers=headers), 415)


@pytest.mark.parametrize("ctype", ["text/plain", None])
def test_put_wrong_content_type_is_415_and_changes_nothing(
    client: httpx.Client, ctype: str | None
) -> None:
    token = create(client, {"a": 1})
    state = get_state(client, token)
    headers = {"Content-Type": ctype} if ctype else {}
    r = client.put(f"/v1/contexts/{token}", content=b'{"a": 2}', headers=headers)
    assert_problem(r, 415)
    assert get_state(client, token) == state


# --- size, 413 -------------------------------------------------------------------------------


def test_body_at_the_limit_is_accepted(small_client: httpx.Client) -> None:
    raw = _json_body(SMALL_MAX_BYTES)
    token = create(small_client, raw=raw)
    assert small_client.get(f"/v1/contexts/{token}").content == raw


def test_post_too_large_is_413(small_client: httpx.Client) -> None:
    r = small_client.post("/v1/contexts", content=_json_body(SMALL_MAX_BYTES + 1), headers=JSON)
    assert_problem(r, 413)


def test_put_and_patch_too_large_are_413_and_change_nothing(small_client: httpx.Client) -> None:
    token = create(small_client, {"a": 1})
    state = get_state(small_client, token)
    big = _json_body(SMALL_MAX_BYTES + 1)
    assert_problem(small_client.put(f"/v1/contexts/{token}", content=big, headers=JSON), 413)
    assert_problem(small_client.patch(f"/v1/contexts/{token}", content=big, headers=MERGE), 413)
    assert get_state(small_client, token) == state


def _chunks(total: int, size: int = 1024) -> Iterator[bytes]:
    body = _json_body(total)
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_chunked_body_too_large_is_413(small_client: httpx.Client) -> None:
    r = small_client.post("/v1/contexts", content=_chunks(3 * SMALL_MAX_BYTES), headers=JSON)
    assert "content-length" not in r.request.headers
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert_problem(r, 413)


def test_chunked_put_too_large_is_413_and_changes_nothing(small_client: httpx.Client) -> None:
    token = create(small_client, {"a": 1})
    state = get_state(small_client, token)
    r = small_client.put(
        f"/v1/contexts/{token}", content=_chunks(SMALL_MAX_BYTES + 100), headers=JSON
    )
    assert_problem(r, 413)
    assert get_state(small_client, token) == state


def test_chunked_body_within_limit_is_accepted(small_client: httpx.Client) -> None:
    raw = b"".join(_chunks(SMALL_MAX_BYTES - 10, size=100))
    r = small_client.post(
        "/v1/contexts", content=_chunks(SMALL_MAX_BYTES - 10, size=100), headers=JSON
    )
    assert r.status_code == 201, r.text
    assert small_client.get(f"/v1/contexts/{r.json()['token']}").content == raw


def test_default_limit_is_one_mib(client: httpx.Client) -> None:
    mib = 1024 * 1024
    raw = _json_body(mib)
    token = create(client, raw=raw)
    assert client.get(f"/v1/contexts/{token}").content == raw
    assert_problem(client.post("/v1/contexts", content=_json_body(mib + 1), headers=JSON), 413)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_huge_chunked_body_is_refused_early(server_pool: Any, backend: str) -> None:
    # 64 MiB streamed to a real server that accepts 4 KiB: refused with 413, promptly.
    client = server_pool.client(backend, "granian", "small")
    total = 64 * 1024 * 1024
    chunk = b" " * 65536  # whitespace: the body would even be valid JSON if it ended in 1
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        while sent < total:
            sent += len(chunk)
            yield chunk
        yield b"1"

    started = time.monotonic()
    r = client.post("/v1/contexts", content=body(), headers=JSON)
    assert_problem(r, 413)
    assert time.monotonic() - started < 30


def test_mget_body_limit(small_client: httpx.Client) -> None:
    # Small server, big token list: refused as too large either way (by size or by count).
    tokens = [UNKNOWN_TOKEN] * 1001
    assert_problem(small_client.post("/v1/contexts/mget", json={"tokens": tokens}), 413)


# --- tokens, 404 -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", MALFORMED_TOKENS)
def test_malformed_token_is_404_everywhere(client: httpx.Client, token: str) -> None:
    victim = create(client, {"victim": True})
    state = get_state(client, victim)
    base = f"/v1/contexts/{token}"
    for r in (
        client.get(base),
        client.get(f"{base}/meta"),
        client.put(base, json={"overwritten": True}),
        client.patch(base, content=b'{"overwritten": true}', headers=MERGE),
        client.delete(base),
    ):
        assert_problem(r, 404)
    assert client.head(base).status_code == 404
    assert get_state(client, victim) == state


@pytest.mark.parametrize("path", ["/v1/contexts/../sessions", "/v1/contexts/./x/../.."])
def test_dot_segments_do_not_escape(client: httpx.Client, path: str) -> None:
    # httpx normalises dot segments as browsers do; whatever reaches the server is not a context.
    r = client.get(path)
    assert r.status_code in {404, 405}
    assert r.headers.get("etag") is None


def test_unknown_token_is_404_for_every_method(client: httpx.Client) -> None:
    base = f"/v1/contexts/{UNKNOWN_TOKEN}"
    assert_problem(client.get(base), 404)
    assert_problem(client.get(f"{base}/meta"), 404)
    assert_problem(client.put(base, json={"a": 1}), 404)
    assert_problem(client.patch(base, content=b'{"a": 1}', headers=MERGE), 404)
    assert_problem(client.delete(base), 404)
    assert client.head(base).status_code == 404
    # None of those writes created it.
    assert client.get(base, headers={"Cache-Control": "no-cache"}).status_code == 404


# --- problem documents -----------------------------------------------------------------------


def test_problem_documents_name_their_kind(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    cases = {
        400: client.post("/v1/contexts", content=b"{", headers=JSON),
        404: client.get(f"/v1/contexts/{UNKNOWN_TOKEN}"),
        412: client.put(f"/v1/contexts/{token}", json={}, headers={"If-Match": '"9"'}),
        415: client.post("/v1/contexts", content=b"{}", headers={"Content-Type": "text/plain"}),
        422: client.patch(
            f"/v1/contexts/{token}",
            content=b'[{"op": "test", "path": "/a", "value": 2}]',
            headers={"Content-Type": "application/json-patch+json"},
        ),
    }
    types = set()
    for status, r in cases.items():
        doc = assert_problem(r, status)
        assert doc["type"].startswith("urn:fastctx:problem:"), doc
        types.add(doc["type"])
    assert len(types) == len(cases), types  # each kind of error has its own type
    assert get_state(client, token)[2] == '"1"'


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/sessions", b'{"meta": %s}'),
        ("/v1/contexts/mget", b'{"tokens": %s}'),
        ("/v1/contexts", b"%s"),
    ],
)
def test_deep_nesting_is_400_not_a_crash(client: httpx.Client, path: str, template: bytes) -> None:
    """JSON nested far past any real document, within the size limit, is refused cleanly."""
    n = 100_000
    nested = template % (b'{"a":' * n + b"1" + b"}" * n)
    assert_problem(client.post(path, content=nested, headers=JSON), 400)
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("number", ["9" * 5000, "\u00b2", "1\u00b9"])
def test_numbers_int_would_refuse_are_client_errors(client: httpx.Client, number: str) -> None:
    """Too many digits for int(), or Latin-1 digits that isdigit() passes: 4xx, never 500."""
    assert_problem(client.post(f"/v1/contexts?ttl={number}", content=b"{}", headers=JSON), 400)
    token = create(client, {"v": 1})
    put = client.put(
        f"/v1/contexts/{token}",
        content=b"{}",
        headers={**JSON, "If-Match": f'"{number}"'.encode("latin-1")},
    )
    assert_problem(put, 412)
    assert client.get(f"/v1/contexts/{token}").json() == {"v": 1}


def test_patches_grow_a_document_past_the_body_limit(small_client: httpx.Client) -> None:
    """One request is bounded by FASTCTX_MAX_CONTEXT_BYTES; the stored document, grown by
    patches each within it, by FASTCTX_MAX_DOCUMENT_BYTES."""
    token = create(small_client, {"parts": []})
    expected: dict[str, Any] = {"parts": []}
    for n in range(4):  # each patch under the body limit, the result well past it
        part = f"{n}" * 3500
        add = json.dumps([{"op": "add", "path": "/parts/-", "value": part}]).encode()
        r = small_client.patch(f"/v1/contexts/{token}", content=add, headers=JSON_PATCH)
        assert r.status_code == 200, r.text
        expected["parts"].append(part)
    r = small_client.patch(f"/v1/contexts/{token}", content=b'{"merged": true}', headers=MERGE)
    assert r.status_code == 200, r.text
    expected["merged"] = True
    r = small_client.get(f"/v1/contexts/{token}")
    assert len(r.content) > 3 * SMALL_MAX_BYTES  # 14 KB
    assert r.json() == expected
    assert r.headers["etag"] == '"6"'


def test_a_patch_that_grows_the_document_past_its_limit_is_413(small_client: httpx.Client) -> None:
    """The document limit bounds what is stored; the refused patch changes nothing."""
    document = dict.fromkeys("abcd", "x" * 3500)  # 14 KB: within the 16 KiB
    token = create(small_client, {"a": document["a"]})
    for key in "bcd":
        grow = json.dumps({key: document[key]}).encode()
        assert small_client.patch(f"/v1/contexts/{token}", content=grow, headers=MERGE).is_success
    for content, headers in (
        (json.dumps({"e": "y" * 3000}).encode(), MERGE),
        (json.dumps([{"op": "copy", "from": "/a", "path": "/e"}]).encode(), JSON_PATCH),
    ):
        r = small_client.patch(f"/v1/contexts/{token}", content=content, headers=headers)
        detail = assert_problem(r, 413)["detail"]
        assert str(SMALL_MAX_DOCUMENT) in detail
        assert "FASTCTX_MAX_DOCUMENT_BYTES" in detail
        would_be = int(detail.split(" bytes")[0].rsplit(" ", 1)[1])
        assert would_be > SMALL_MAX_DOCUMENT
        r = small_client.get(f"/v1/contexts/{token}")
        assert r.json() == document
        assert r.headers["etag"] == '"4"'


def test_a_document_grows_past_a_mebibyte_with_the_default_limits(client: httpx.Client) -> None:
    token = create(client, {"n": 0})
    expected: dict[str, Any] = {"n": 0}
    for key in "abc":  # three patches of 600 KB: 1.8 MB stored, under the 16 MiB default
        expected[key] = key * 600_000
        grow = json.dumps({key: expected[key]}).encode()
        assert client.patch(f"/v1/contexts/{token}", content=grow, headers=MERGE).is_success
    r = client.get(f"/v1/contexts/{token}")
    assert len(r.content) > 1024 * 1024
    assert r.json() == expected
