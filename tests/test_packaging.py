"""The wheel as users install it: the bare client, and `fastctx[server]` serving."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import fastctx
from support.ports import free_port
from support.processes import REPO, stop_process
from support.servers import wait_healthy

# The wheel's tests: one build (cached by cargo) and two installs from the package index.
wheel_test = pytest.mark.timeout(900)

# What only `fastctx serve` needs; the bare install has none of it.
SERVER_MODULES = ("granian", "starlette", "redis", "hiredis", "prometheus_client", "uvloop")
# Set to a wheel already built (e.g. by `make wheel`) to test that one instead of building.
WHEEL_VARIABLE = "FASTCTX_TEST_WHEEL"


def _env() -> dict[str, str]:
    """This environment without anything that would point Python at the checkout or our venv."""
    dropped = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")
    return {
        k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("FASTCTX_")
    }


def _run(*command: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        env=_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once for the module (Rust's build is cached)."""
    given = os.environ.get(WHEEL_VARIABLE)
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    maturin = Path(sys.executable).with_name("maturin")
    done = subprocess.run(
        [str(maturin), "build", "--release", "--quiet", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("fastctx-*.whl")
    return built


@pytest.fixture(scope="module")
def venvs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two fresh virtual environments outside the checkout: `fastctx` and `fastctx[server]`."""
    root = tmp_path_factory.mktemp("venvs")
    assert not root.is_relative_to(REPO)
    wanted = {"bare": str(wheel), "server": f"{wheel}[server]"}
    installs = []
    for name, requirement in wanted.items():
        # Both at once: most of the time goes to fetching and unpacking packages.
        script = (
            f"{sys.executable} -m venv {root / name} && "
            f"{root / name / 'bin' / 'python'} -m pip install --quiet "
            f"--disable-pip-version-check '{requirement}'"
        )
        installs.append(
            subprocess.Popen(
                ["/bin/sh", "-c", script],
                env=_env(),
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for proc in installs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
    return {name: root / name / "bin" for name in wanted}


@pytest.mark.slow
@wheel_test
def test_bare_install_is_the_client_without_the_server(venvs: dict[str, Path]) -> None:
    bare = venvs["bare"]
    script = (
        "import json, sys\n"
        "import fastctx\n"
        "from fastctx import AsyncClient, Client\n"
        "from fastctx.middleware import (\n"
        "    ContextMiddleware, apropagate, current_token, propagate, propagation_headers)\n"
        f"server = {SERVER_MODULES!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in server)\n"
        "print(json.dumps({'file': fastctx.__file__, 'version': fastctx.__version__,\n"
        "                  'loaded': loaded}))\n"
    )
    done = _run(bare / "python", "-c", script, cwd=bare)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert Path(seen["file"]).is_relative_to(bare.parent), seen  # the wheel's, not the checkout's
    assert seen["version"] == fastctx.__version__
    assert seen["loaded"] == []
    for module in SERVER_MODULES:
        missing = _run(bare / "python", "-c", f"import {module}", cwd=bare)
        assert missing.returncode != 0, module
        assert "ModuleNotFoundError" in missing.stderr, missing.stderr


@pytest.mark.slow
@wheel_test
def test_bare_install_says_what_serving_needs(venvs: dict[str, Path]) -> None:
    bare = venvs["bare"]
    version = _run(bare / "fastctx", "--version", cwd=bare)
    assert version.stdout == f"fastctx {fastctx.__version__}\n", version.stderr
    serve = _run(bare / "fastctx", "serve", "--port", str(free_port()), cwd=bare)
    assert serve.returncode == 2, serve.stdout + serve.stderr
    assert serve.stderr.count("\n") == 1, serve.stderr
    assert serve.stderr.startswith("fastctx: fastctx serve needs the server's packages")
    assert "granian" in serve.stderr
    assert serve.stderr.endswith(" pip install 'fastctx[server]'\n")


@pytest.fixture
def served(venvs: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    """`fastctx serve` of the [server] install, on a free port with memory://."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venvs["server"] / "fastctx"), "serve", "--port", str(port)],
            env=_env() | {"FASTCTX_BACKEND": "memory://", "FASTCTX_HOST": "127.0.0.1"},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc, log)
        yield base
    finally:
        stop_process(proc)


@pytest.mark.slow
@wheel_test
def test_server_install_serves_and_the_bare_client_talks_to_it(
    venvs: dict[str, Path], served: str
) -> None:
    script = (
        "import sys\n"
        "from fastctx import Client\n"
        "with Client(sys.argv[1]) as client:\n"
        "    token = client.create({'from': 'the wheel'})\n"
        "    assert client.get(token) == {'from': 'the wheel'}, client.get(token)\n"
        "print(token)\n"
    )
    done = _run(venvs["bare"] / "python", "-c", script, served, cwd=venvs["bare"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(done.stdout.strip()) == 22


def test_dev_extra_holds_the_server_extra() -> None:
    """`make test` installs dev alone; what serving needs must be in it."""
    with (REPO / "pyproject.toml").open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert set(extras["server"]) <= set(extras["dev"])


INTEGRATIONS = {"fastmcp": "fastmcp", "mcp": "mcp_sdk"}  # extra: module


def _distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported(source: Path) -> set[str]:
    """The top-level modules a module imports when it is loaded (not for type checking)."""
    found = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports nothing at run time
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                found |= {alias.name.split(".")[0] for alias in inner.names}
            elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                found.add(inner.module.split(".")[0])
    return found


@pytest.mark.parametrize(("extra", "module"), INTEGRATIONS.items())
def test_an_integration_imports_only_what_its_extra_requires(extra: str, module: str) -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    required = {
        _distribution(Requirement(line).name)
        for line in [*project["dependencies"], *project["optional-dependencies"][extra]]
    }
    providers = importlib.metadata.packages_distributions()
    source = REPO / "python" / "fastctx" / "integrations" / f"{module}.py"
    for name in _imported(source) - set(sys.stdlib_module_names) - {"fastctx", "__future__"}:
        assert {_distribution(d) for d in providers[name]} & required, (name, extra)
    # And `make test` installs what the extra does.
    assert {
        _distribution(Requirement(line).name) for line in project["optional-dependencies"]["dev"]
    } >= {_distribution(Requirement(line).name) for line in project["optional-dependencies"][extra]}


@pytest.mark.parametrize(("extra", "module"), INTEGRATIONS.items())
def test_an_integration_without_its_extra_says_how_to_install_it(extra: str, module: str) -> None:
    missing = {"fastmcp": "key_value", "mcp": "mcp"}[extra]
    script = (
        f"import sys; sys.modules[{missing!r}] = None\n"  # as if it were not installed
        f"import fastctx.integrations.{module}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f'pip install "fastctx[{extra}]"' in done.stderr.splitlines()[-1]


@pytest.mark.slow
@wheel_test
def test_wheel_is_abi3_and_carries_its_licence(wheel: Path) -> None:
    assert "-abi3-" in wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name for name in names if name.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "fastctx/py.typed" in names


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    """In this environment, where the server's packages are installed: they stay unloaded."""
    script = (
        "import sys\n"
        "import fastctx, fastctx.client, fastctx.middleware, fastctx.errors, fastctx.types\n"
        f"server = {SERVER_MODULES!r}\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in server or m.startswith(('fastctx.http', \n"
        "                                                          'fastctx.mcp',\n"
        "                                                          'fastctx.backends'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
