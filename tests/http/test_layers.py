"""The interfaces stand side by side on one ASGI layer: REST and MCP never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fastctx

PACKAGE = Path(fastctx.__file__).parent


def _imports(folder: str) -> set[str]:
    """Every fastctx module the modules of `folder` import, at any depth (lazy ones too)."""
    found: set[str] = set()
    for path in (PACKAGE / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("fastctx")}


def _below(imported: set[str], *forbidden: str) -> set[str]:
    return {name for name in imported if name.split(".")[:2] in [f.split(".") for f in forbidden]}


def test_mcp_does_not_import_http() -> None:
    assert not _below(_imports("mcp"), "fastctx.http", "fastctx.app")


def test_asgi_imports_neither_interface() -> None:
    assert not _below(_imports("asgi"), "fastctx.http", "fastctx.mcp", "fastctx.app")


def test_http_imports_mcp_only_through_the_app() -> None:
    """fastctx.http names no MCP module; it reaches the assembled app (for `fastctx.http:app`
    and the served document) only when asked for them, never on import."""
    assert not _below(_imports("http"), "fastctx.mcp")
    code = (
        "import sys, fastctx.http, fastctx.http.contexts, fastctx.http.openapi;"
        "print(sorted(m for m in sys.modules if m.startswith(('fastctx.app', 'fastctx.mcp'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
