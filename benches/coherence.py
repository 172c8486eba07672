"""The invalidation window: how long after a write through node B node A still serves the old one.

Two `fastctx serve` processes on one private redis-server. For each trial a context is read
through A (so A holds it in its cache), patched through B, and A is polled without pause until
it answers with the new version; the lag is measured from B's answer to A's first new answer.
Writes are done from this process, so the clocks compared are one clock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
FASTCTX = Path(sys.executable).with_name("fastctx")
RESULTS = ROOT / "benches" / "results" / "coherence.json"
TARGET_MS = 50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def measure(trials: int, workdir: Path) -> list[float]:
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for _ in range(2):
            port = free_port()
            env = {**os.environ, "FASTCTX_LOG_LEVEL": "warning"}
            command = [str(FASTCTX), "serve", "--port", str(port)]
            command += ["--backend", f"redis://127.0.0.1:{redis_port}/0"]
            nodes.append(subprocess.Popen(command, env=env))
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, nodes, strict=True):
            wait_until_up(f"{url}/readyz", proc)
        with httpx.Client(base_url=urls[0]) as a, httpx.Client(base_url=urls[1]) as b:
            created = a.post("/v1/contexts", json={"n": 0})
            token = created.json()["token"]
            lags = []
            for n in range(1, trials + 1):
                assert a.get(f"/v1/contexts/{token}").headers["x-cache"] == "hit"
                written = b.patch(
                    f"/v1/contexts/{token}",
                    content=json.dumps({"n": n}),
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                acknowledged = time.perf_counter()
                version = written.json()["version"]
                while True:
                    seen = a.get(f"/v1/contexts/{token}")
                    if seen.headers["etag"] == f'"{version}"':
                        lags.append((time.perf_counter() - acknowledged) * 1000)
                        break
                    if time.perf_counter() - acknowledged > 5:
                        raise SystemExit(f"trial {n}: node A never saw version {version}")
            return lags
    finally:
        for proc in nodes:
            proc.terminate()
        for proc in nodes:
            proc.wait(timeout=10)
        redis.terminate()
        redis.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (make redis-server)")
    with tempfile.TemporaryDirectory() as workdir:
        lags = sorted(measure(args.trials, Path(workdir)))
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    report = {
        "trials": len(lags),
        "p50_ms": statistics.median(lags),
        "p99_ms": p99,
        "max_ms": lags[-1],
        "target_ms": TARGET_MS,
        "met": lags[-1] < TARGET_MS,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"invalidation window over {len(lags)} writes: p50 {report['p50_ms']:.2f} ms, "
        f"p99 {p99:.2f} ms, max {lags[-1]:.2f} ms (target < {TARGET_MS:.0f} ms: "
        f"{'met' if report['met'] else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
