"""The pages the docs site writes at build time: the HTTP API and the benchmarks."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"page_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


openapi_page = load(REPO / "docs" / "hooks" / "openapi_page.py")
docs_page = load(REPO / "benches" / "docs_page.py")


def test_the_api_page_has_every_operation_and_error_status_served() -> None:
    document = openapi_page.served_document()
    page = openapi_page.render(document)
    for path, item in document["paths"].items():
        for method in openapi_page.METHODS:
            if method in item:
                assert f"`{method.upper()} {path}`" in page
                assert item[method]["operationId"] in page
    statuses = {
        int(status)
        for item in document["paths"].values()
        for method in openapi_page.METHODS
        for status in item.get(method, {}).get("responses", {})
        if status.isdigit() and int(status) >= 400
    }
    errors = page.split("## Errors", 1)[1].split("\n## ", 1)[0]
    for status in statuses:
        assert f"\n| {status} | " in errors
    for name in document["components"]["schemas"]:
        assert f"{{ #schema-{name.lower()} }}" in page


def test_the_benchmarks_page_says_so_when_nothing_is_recorded(tmp_path: Path) -> None:
    page = docs_page.render(tmp_path, tmp_path / "no-history")
    assert "No benchmark results are recorded in this checkout yet" in page
    assert "make bench" in page
    assert "| row |" not in page


def test_the_benchmarks_page_keeps_the_written_up_past_runs(tmp_path: Path) -> None:
    page = docs_page.render(tmp_path)
    assert "## A past run: 2026-11-24" in page


def test_the_benchmarks_page_shows_a_run_with_its_machine_date_and_command(
    tmp_path: Path,
) -> None:
    # The shape benches/run.py saves (see its `saved`), with one row and one target.
    run = {
        "date": "2026-12-01T10:00:00+00:00",
        "command": "benches/run.py --only floor-bare",
        "options": {"duration_s": 10.0, "connections": 64},
        "pinning": {"mode": "split", "why": "steadiest here"},
        "machine": {
            "cpu": "Example CPU",
            "nproc": 2,
            "kernel": "6.1",
            "python": "3.11.7",
            "packages": {"granian": "2.5.0", "fastapi": None},
            "redis_server": "Redis server v=7.0.15",
            "wrk": "wrk 4.1.0",
        },
        "rows": [
            {
                "row": "floor-bare",
                "rps": 1000.0,
                "p50_ms": 1.0,
                "p99_ms": 2.0,
                "ratio": 1.0,
                "note": "",
                "details": {},
                "failed": None,
                "error_count": 0,
            }
        ],
        "targets": [
            {"target": "t", "goal": ">= 1", "measured": 1.0, "unit": "", "met": True},
        ],
        "noisy_rows": [],
        "ok": True,
    }
    (tmp_path / "latest.json").write_text(json.dumps(run))
    page = docs_page.render(tmp_path, tmp_path / "no-history")
    assert "No benchmark results are recorded" not in page
    assert "Run at: 2026-12-01T10:00:00+00:00" in page
    assert "Example CPU (CPUs: 2)" in page
    assert "granian 2.5.0" in page
    assert "fastapi" not in page.split("Packages:", 1)[1].split("\n", 1)[0]
    assert "`benches/run.py --only floor-bare`" in page
    assert "| floor-bare | 1,000 | 1.00 | 2.00 | 1.00 | 0 |" in page


def test_a_reference_set_is_read_when_the_checkout_has_none(tmp_path: Path) -> None:
    reference = tmp_path / "reference" / "2026-12-01"
    reference.mkdir(parents=True)
    coherence = {"trials": 300, "p50_ms": 0.75, "p99_ms": 1.09, "max_ms": 1.17}
    coherence |= {"target_ms": 50.0, "met": True}
    (reference / "coherence.json").write_text(json.dumps(coherence))
    page = docs_page.render(tmp_path, tmp_path / "no-history")
    assert f"`{reference}/`" in page or "reference/2026-12-01/" in page
    assert "p50 0.75 ms, p99 1.09 ms, max 1.17 ms" in page


def test_the_readme_stays_a_way_in() -> None:
    """The user guide lives in docs/ and run history in CHANGELOG.md, not in the README."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    headings = [line for line in readme.splitlines() if line.startswith("#")]
    assert not [h for h in headings if "benchmark" in h.lower()]
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert "docs/getting-started.md" in links
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing


def test_the_benchmarks_page_shows_the_micro_benchmarks_pytest_benchmark_saved(
    tmp_path: Path,
) -> None:
    saved = tmp_path / "micro.json"
    subprocess.run(
        [
            sys.executable, "-m", "pytest", str(REPO / "benches" / "test_token_bench.py"),
            "-q", "-p", "no:cacheprovider", "--benchmark-enable", "--benchmark-only",
            "--benchmark-max-time=0.01", "--benchmark-min-rounds=2",
            f"--benchmark-json={saved}",
        ],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    page = docs_page.render(tmp_path, tmp_path / "no-history")
    assert "## Micro benchmarks (pytest-benchmark)" in page
    assert "| token | test_token[rust] |" in page
