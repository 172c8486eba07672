"""read_body's deadline: a body that does not arrive in time is a 400, and nothing else."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from fastctx.asgi.body import SWEEP_SECONDS, read_body
from fastctx.errors import BadRequest


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_a_body_that_never_comes_is_a_400_within_the_deadline() -> None:
    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(BadRequest, match=r"did not arrive in full within 0\.3 s"):
            await read_body(never, b"10", 100, seconds=0.3)
        elapsed = time.monotonic() - started
        # The request goes on normally afterwards: no cancellation is left pending on it.
        await asyncio.sleep(0.01)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        return elapsed

    elapsed = run(scenario())
    assert 0.3 <= elapsed < 0.3 + 2 * SWEEP_SECONDS + 0.5


def test_a_body_in_time_is_returned_and_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        parts = iter([b"ab", b"cd", b""])

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0.01)
            body = next(parts)
            return {"type": "http.request", "body": body, "more_body": bool(body)}

        assert await read_body(receive, None, 100, seconds=5) == b"abcd"
        # Well past the sweeps that would have fired: nothing cancels the task later.
        await asyncio.sleep(3 * SWEEP_SECONDS)

    run(scenario())


def test_other_cancellations_stay_cancellations() -> None:
    async def scenario() -> None:
        reading = asyncio.ensure_future(read_body(never, None, 100, seconds=30))
        await asyncio.sleep(0.05)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading

    run(scenario())


def test_readers_time_out_by_their_own_deadlines() -> None:
    async def one(seconds: float) -> str:
        try:
            await read_body(never, None, 100, seconds=seconds)
        except BadRequest:
            return f"late {seconds:g}"
        return "read"

    async def scenario() -> list[str]:
        slow = asyncio.ensure_future(one(60))
        results = await asyncio.gather(one(0.2), one(0.4))
        assert not slow.done()  # its own deadline is far away
        slow.cancel()
        return list(results)

    assert run(scenario()) == ["late 0.2", "late 0.4"]


def test_a_body_is_whole_at_its_declared_length() -> None:
    # granian sends the last chunk with more_body=True and an empty one after it: the reader
    # stops at the declared length and leaves that one for whoever receives next.
    async def scenario() -> tuple[bytes, list[dict[str, Any]]]:
        messages = [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"cd", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": False},
        ]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        body = await read_body(receive, b"4", 100, seconds=5)
        return body, messages

    body, left = run(scenario())
    assert body == b"abcd"
    assert left == [{"type": "http.request", "body": b"", "more_body": False}]


def test_without_a_declared_length_the_reader_waits_for_the_last_chunk() -> None:
    async def scenario() -> tuple[bytes, int]:
        messages = [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": False},
        ]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        return await read_body(receive, None, 100, seconds=5), len(messages)

    assert run(scenario()) == (b"ab", 0)
