"""mkdocs hook: the pages written at build time, from the code and from the result files.

- `http-api.md`: from the OpenAPI document the app serves (docs/hooks/openapi_page.py);
- `benchmarks.md`: from `benches/results/*.json` (benches/docs_page.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path) -> ModuleType:
    """A module from its file: neither docs/hooks nor benches/ is a package."""
    spec = importlib.util.spec_from_file_location(f"fastctx_docs_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config: Any) -> Files:
    openapi_page = load(ROOT / "docs" / "hooks" / "openapi_page.py")
    docs_page = load(ROOT / "benches" / "docs_page.py")
    api = openapi_page.render(openapi_page.served_document())
    files.append(File.generated(config, "http-api.md", content=api))
    files.append(File.generated(config, "benchmarks.md", content=docs_page.render()))
    return files
