"""API keys and tokens never reach a log, an error message, /metrics or a repr."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fastctx.config import Settings
from support.ports import free_port
from support.processes import stop_process
from support.servers import wait_healthy

SECRET_A = "sk-acme-3f9c1e7d5b2a40c8"
SECRET_B = "sk-globex-8e4d2c6a0b1f93e7"
KEYS = f"acme:{SECRET_A},globex:{SECRET_B}"
# Presented keys that are wrong but close to the real ones: they must not be echoed either.
FORGED = [SECRET_A[:-1], SECRET_A + "0", SECRET_B.upper(), "sk-forged-" + "9" * 30]


def test_settings_repr_hides_api_keys() -> None:
    settings = Settings(api_keys=KEYS)
    assert SECRET_A not in repr(settings)
    assert SECRET_B not in str(settings)
    assert settings.tenants() == {SECRET_A: "acme", SECRET_B: "globex"}


@pytest.mark.parametrize(
    "keys",
    [
        f"acme:k1,{SECRET_A}",  # a bare key, its tenant forgotten
        f"bad tenant!:{SECRET_A}",
        f"{SECRET_A}:",
        f"acme:{SECRET_A},globex:{SECRET_A}",  # one key for two tenants
    ],
)
def test_bad_key_lists_are_refused_without_echoing_keys(keys: str) -> None:
    with pytest.raises(ValueError, match="API_KEYS") as refused:
        Settings(api_keys=keys)
    assert SECRET_A not in str(refused.value)


def test_cli_refuses_a_bad_key_list_without_printing_it(spawn_fastctx: Any) -> None:
    proc = spawn_fastctx("serve", "--port", str(free_port()), api_keys=f"acme:k1,{SECRET_A}")
    assert proc.proc.wait(timeout=30) == 2
    output = proc.output()
    assert "API_KEYS" in output
    assert SECRET_A not in output


def _traffic(client: httpx.Client) -> str:
    """Requests that succeed, fail auth, fail validation and fail lookups; returns a token."""
    good = {"Authorization": f"Bearer {SECRET_A}"}
    r = client.post("/v1/contexts", content=b'{"a": 1}', headers={**good, **_JSON})
    assert r.status_code == 201
    token: str = r.json()["token"]
    assert client.get(f"/v1/contexts/{token}", headers=good).status_code == 200
    other = {"Authorization": f"Bearer {SECRET_B}"}
    assert client.get(f"/v1/contexts/{token}", headers=other).status_code == 404
    for forged in FORGED:
        for scheme in ("Bearer", "Basic"):
            auth = {"Authorization": f"{scheme} {forged}"}
            assert client.get(f"/v1/contexts/{token}", headers=auth).status_code == 401
            r = client.post("/mcp", content=b"{}", headers={**auth, **_JSON})
            assert r.status_code == 401
    bad = [
        ("POST", "/v1/contexts", b"{", _JSON),
        ("POST", "/v1/contexts", b"[" * 10_000, _JSON),
        ("PUT", f"/v1/contexts/{token}", b"{}", {**_JSON, "If-Match": '"9"'}),
        ("PATCH", f"/v1/contexts/{token}", b"[{}]", _JSON_PATCH),
        ("GET", "/v1/sessions/nope", b"", {}),
        ("POST", "/mcp", b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
         {**_JSON, "Accept": "application/json", "Mcp-Session-Id": "0" * 22}),
    ]  # fmt: skip
    for method, path, body, headers in bad:
        r = client.request(method, path, content=body, headers={**good, **headers})
        assert 400 <= r.status_code < 500
    return token


_JSON = {"Content-Type": "application/json"}
_JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def test_server_output_and_metrics_never_show_keys_or_tokens(spawn_fastctx: Any) -> None:
    port = free_port()
    server = spawn_fastctx(
        "serve",
        "--port",
        str(port),
        "--backend",
        "memory://",
        host="127.0.0.1",
        api_keys=KEYS,
        log_level="debug",
    )
    base_url = f"http://127.0.0.1:{port}"
    wait_healthy(base_url, server.proc, server.log)
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        token = _traffic(client)
        metrics = client.get("/metrics").text
    assert stop_process(server.proc) is not None
    output = server.output()
    assert "Listening at" in output  # the log was captured at all
    for secret in (SECRET_A, SECRET_B, *FORGED, token):
        assert secret not in output, secret
        assert secret not in metrics, secret
    # No access log by default: request paths do not appear either.
    assert "/v1/contexts" not in output


def test_unexpected_errors_are_logged_without_tokens(
    start_app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A request that fails on the server's side is logged by route, not by its path."""
    client = start_app("asgi", "memory://")
    r = client.post("/v1/contexts", content=b"{}", headers=_JSON)
    token = r.json()["token"]
    session = client.post("/v1/sessions").json()["session"]

    async def fail(*args: Any) -> Any:
        raise RuntimeError("a fault inside the server")

    state = client.app.state  # type: ignore[attr-defined]
    monkeypatch.setattr(state.registry, "meta", fail)
    monkeypatch.setattr(state.sessions, "get", fail)
    with caplog.at_level("ERROR", logger="fastctx"):
        assert client.get(f"/v1/contexts/{token}/meta").status_code == 500
        assert client.get(f"/v1/sessions/{session}").status_code == 500
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /v1/contexts/{token}/meta" in logged
    assert "GET /v1/sessions/{id}" in logged
    assert token not in caplog.text
    assert session not in caplog.text
