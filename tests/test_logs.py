"""The log lines of `fastctx serve`: one format for fastctx and granian, JSON, the access log."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

import httpx
import pytest

from fastctx.config import Settings
from fastctx.logs import JsonFormatter, logging_config
from support.ports import free_port
from support.servers import wait_healthy

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)


def _serve(spawn_fastctx: Any, *flags: str, **settings: Any) -> tuple[Any, str]:
    port = free_port()
    spawned = spawn_fastctx("serve", "--port", str(port), *flags, **settings)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, spawned.proc, spawned.log)
    return spawned, base


def _lines_once(spawned: Any, marker: str) -> list[str]:
    """The output's lines once one holds `marker` (the line of the last request made)."""
    deadline = time.monotonic() + 10
    while True:
        lines = spawned.output().splitlines()
        if any(marker in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_access_log_in_json_names_route_templates_never_tokens(spawn_fastctx: Any) -> None:
    spawned, base = _serve(spawn_fastctx, "--access-log", "--log-format", "json")
    with httpx.Client(base_url=base) as client:
        created = client.post("/v1/contexts", json={"secret": "body-secret-31337"})
        token = created.json()["token"]
        assert client.get(f"/v1/contexts/{token}").status_code == 200
        # A parameter the route does not take is refused, and its value is not logged either.
        assert client.get(f"/v1/contexts/{token}", params={"q": "query-secret"}).status_code == 400
        assert client.get(f"/v1/contexts/{token}/nowhere").status_code == 404
        assert client.get("/openapi.json").status_code == 200
    lines = _lines_once(spawned, "/openapi.json")
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    assert any(r["logger"] == "granian" for r in records), "granian's lines share the format"
    access = [r for r in records if r["logger"] == "fastctx.access"]
    seen = [(r["method"], r["route"], r["status"]) for r in access]
    assert seen[-5:] == [
        ("POST", "/v1/contexts", 201),
        ("GET", "/v1/contexts/{token}", 200),
        ("GET", "/v1/contexts/{token}", 400),
        ("GET", "unmatched", 404),
        ("GET", "/openapi.json", 200),
    ], seen
    for r in access:
        assert isinstance(r["duration_ms"], float | int)
        assert r["duration_ms"] >= 0
        assert r["message"] == f"{r['method']} {r['route']} {r['status']} {r['duration_ms']:.3f}ms"
    out = spawned.output()
    for secret in (token, "query-secret", "body-secret-31337", "nowhere"):
        assert secret not in out


def test_access_log_and_format_from_the_environment(spawn_fastctx: Any) -> None:
    spawned, base = _serve(spawn_fastctx, access_log="true", log_format="json")
    httpx.get(f"{base}/openapi.json")
    lines = _lines_once(spawned, "/openapi.json")
    access = [json.loads(line) for line in lines if "fastctx.access" in line]
    assert [(r["method"], r["route"]) for r in access][-1] == ("GET", "/openapi.json"), lines


def test_text_lines_of_fastctx_and_granian_look_alike(spawn_fastctx: Any) -> None:
    # Not loopback and no keys: fastctx itself warns, next to granian's start-up lines.
    spawned, base = _serve(spawn_fastctx, "--host", "0.0.0.0", "--access-log")
    httpx.get(f"{base}/openapi.json")
    lines = [line for line in _lines_once(spawned, "/openapi.json") if line.strip()]
    for line in lines:
        assert TEXT_LINE.match(line), line
    assert any(" granian: Listening at" in line for line in lines), lines
    assert any(" WARNING fastctx: " in line for line in lines), lines
    assert any(" INFO fastctx.access: GET /openapi.json 200 " in line for line in lines), lines


def test_no_access_log_unless_asked(spawn_fastctx: Any) -> None:
    spawned, base = _serve(spawn_fastctx, log_level="debug")
    for _ in range(3):
        httpx.get(f"{base}/healthz")
    time.sleep(0.3)
    assert "fastctx.access" not in spawned.output()
    assert "/healthz" not in spawned.output()  # nor granian's own, which shows raw paths


def test_json_keeps_a_traceback_on_its_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("fastctx", logging.ERROR, __file__, 1, "failed", None, None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "error"
    assert "RuntimeError: boom" in parsed["exception"]


@pytest.mark.parametrize("access", [False, True])
def test_access_logger_level_follows_the_setting_alone(access: bool) -> None:
    """On at any --log-level when asked for; off at any level otherwise (debug included)."""
    config = logging_config(Settings(access_log=access, log_level="error"))
    assert config["loggers"]["fastctx.access"]["level"] == ("INFO" if access else "CRITICAL")
    debug = logging_config(Settings(access_log=access, log_level="debug"))
    assert debug["loggers"]["fastctx.access"] == config["loggers"]["fastctx.access"]
