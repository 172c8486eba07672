"""Micro benchmarks: token generation in Rust against the Python one would otherwise write."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fastctx import _core

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def py_base62_token() -> str:
    """128 CSPRNG bits as 22 base62 digits, most significant first (the Rust layout)."""
    n = secrets.randbits(128)
    digits = []
    for _ in range(22):
        n, r = divmod(n, 62)
        digits.append(BASE62[r])
    return "".join(reversed(digits))


def base62_value(token: str) -> int:
    value = 0
    for char in token:
        value = value * 62 + BASE62.index(char)
    return value


def test_tokens_are_equivalent() -> None:
    for _ in range(200):
        rust, python = _core.new_token(), py_base62_token()
        assert _core.is_token(python)
        assert len(rust) == len(python) == len(secrets.token_urlsafe(16)) == 22
        # The Python encoder writes the same digits for the number a Rust token encodes.
        value = base62_value(rust)
        assert value < 2**128
        n, digits = value, []
        for _ in range(22):
            n, r = divmod(n, 62)
            digits.append(BASE62[r])
        assert "".join(reversed(digits)) == rust


TOKEN_MAKERS: dict[str, Callable[[], str]] = {
    "rust": _core.new_token,
    "python-token_urlsafe": lambda: secrets.token_urlsafe(16),
    "python-base62": py_base62_token,
}


@pytest.mark.benchmark(group="token")
@pytest.mark.parametrize("impl", list(TOKEN_MAKERS))
def test_token(benchmark: BenchmarkFixture, impl: str) -> None:
    token = benchmark(TOKEN_MAKERS[impl])
    assert len(token) == 22
