"""Tokens: 22 base62 characters carrying 128 bits from the OS CSPRNG."""

import os
import string
import threading
from collections import Counter

import pytest

from fastctx import _core

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
N = 100_000


def decode(token: str) -> int:
    value = 0
    for char in token:
        value = value * 62 + ALPHABET.index(char)
    return value


def encode(value: int) -> str:
    digits = []
    for _ in range(22):
        value, digit = divmod(value, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


@pytest.fixture(scope="module")
def tokens() -> list[str]:
    return [_core.new_token() for _ in range(N)]


def test_tokens_are_22_base62_characters(tokens: list[str]) -> None:
    for token in tokens:
        assert len(token) == 22
        assert set(token) <= set(ALPHABET)
        assert _core.is_token(token)
        value = decode(token)
        assert value < 2**128
        assert encode(value) == token  # left-padded with "0", most significant digit first


def test_tokens_are_unique(tokens: list[str]) -> None:
    assert len(set(tokens)) == N


def test_every_bit_is_a_fair_coin(tokens: list[str]) -> None:
    values = [decode(token) for token in tokens]
    # 100k fair coins: sd = 158; 6 sd = 950 makes a false alarm practically impossible.
    for bit in range(128):
        ones = sum((value >> bit) & 1 for value in values)
        assert abs(ones - N / 2) < 950, f"bit {bit} set {ones} times"


def test_characters_are_uniform(tokens: list[str]) -> None:
    # 2**128 < 62**22: the leading digit is at most "7"; the other 21 are uniform.
    assert {token[0] for token in tokens} <= set("01234567")
    counts = Counter(char for token in tokens for char in token[1:])
    expected = N * 21 / 62
    chi2 = sum((counts[char] - expected) ** 2 / expected for char in ALPHABET)
    assert chi2 < 150  # 61 degrees of freedom: P(chi2 > 150) is about 1e-9


def test_tokens_are_not_sequential() -> None:
    a, b = decode(_core.new_token()), decode(_core.new_token())
    assert abs(a - b) > 2**64


def test_a_forked_child_never_hands_out_its_parents_tokens() -> None:
    # Randomness is fetched in batches: the parent's unused part must not reach the child.
    _core.new_token()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.write(write, "".join(_core.new_token() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    assert status == 0
    with os.fdopen(read) as pipe:
        in_child = pipe.read()
    in_parent = "".join(_core.new_token() for _ in range(8))
    assert len(in_child) == len(in_parent) == 8 * 22
    assert {in_child[i : i + 22] for i in range(0, 176, 22)}.isdisjoint(
        {in_parent[i : i + 22] for i in range(0, 176, 22)}
    )


def test_threads_never_share_tokens() -> None:
    found: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(_core.new_token() for _ in range(5_000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({token for tokens in found for token in tokens}) == 20_000


@pytest.mark.parametrize(
    "value",
    [
        "0" * 22,
        "0" + "z" * 21,
        encode(2**128 - 1),
        "7n42DGM5Tflk9n8mt7Fhc7",
        "7AbCdEfGhIjKlMnOpQrStU",
    ],
)
def test_is_token_accepts(value: str) -> None:
    assert _core.is_token(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0" * 21,
        "0" * 23,
        "0" * 21 + "-",
        "0" * 21 + "_",
        "0" * 21 + "+",
        "0" * 21 + "/",
        "0" * 21 + " ",
        "0" * 21 + "=",
        "0" * 21 + "é",
        "0" * 20 + "é",  # 22 bytes in UTF-8, 21 characters
        "0" * 21 + "\uff10",  # a full-width digit
        "0" * 21 + "\x00",
        "z" * 22,
        "7n42DGM5Tflk9n8mt7Fhc8",  # 2**128
        "8" + "0" * 21,
    ],
)
def test_is_token_rejects(value: str) -> None:
    assert not _core.is_token(value)


def test_is_token_requires_a_string() -> None:
    with pytest.raises(TypeError):
        _core.is_token(b"0" * 22)  # type: ignore[arg-type]
