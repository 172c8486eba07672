"""examples/run.py: the gateway -> pricing -> billing services, run as a user would run them."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

from support.processes import REPO, clean_env
from support.redis import RedisServer

EXAMPLES_DB = 11  # a DB no other test uses


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    redis: RedisServer = request.getfixturevalue("redis_server")
    return redis.url(EXAMPLES_DB)


def run_example(backend: str) -> str:
    env = clean_env(backend=backend)
    done = subprocess.run(
        [sys.executable, "examples/run.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", done.stderr  # nothing complained, not even on the way out
    return done.stdout


def test_one_order_through_three_services(backend: str) -> None:
    out = run_example(backend)
    lines = out.splitlines()
    assert lines[0].startswith(f"fastctx ({backend}) on :")

    # The listener saw every write, in order, then the deletion with the session.
    heard = [line.removeprefix("  [listener] ") for line in lines if "[listener]" in line]
    assert heard[0].startswith("listening to session ")
    versions = [line.split(" by ")[0] for line in heard[1:]]
    assert versions == ["v1 created", "v2 updated", "v3 updated", "v3 deleted"]
    # When an event's data was still its own version's, it names the right writer and fields.
    for line, expected in zip(
        heard[1:4],
        ["by gateway: order", "by pricing: prices, total_cents", "by billing: invoice"],
        strict=True,
    ):
        assert " by " not in line or line.endswith(expected), line

    placed = next(line for line in lines if line.startswith("POST gateway/orders -> 201 "))
    answer = json.loads(placed.removeprefix("POST gateway/orders -> 201 "))
    assert answer["version"] == 3
    assert answer["invoice"] == "INV-1001"
    assert re.fullmatch(r"[0-9A-Za-z]{22}", answer["token"])

    start = lines.index("final context, as the gateway loads it by its token:")
    final = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  ") or line.startswith("  [listener]"):
            break
        key, _, value = line.strip().partition(": ")
        final[key] = json.loads(value)
    assert final["order"]["id"] == 1001  # the gateway's
    assert final["total_cents"] == 300  # pricing's: 3 apples at 50, 2 pears at 75
    assert final["invoice"] == {"number": "INV-1001", "amount_cents": 300, "currency": "EUR"}
    assert final["trail"] == ["gateway", "pricing", "billing"]
    assert lines[-1] == "all stopped"

    # Every port it used is free again: nothing was left running.
    ports = re.findall(r" on :(\d+)", lines[0])
    assert len(ports) == 4
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0, port
