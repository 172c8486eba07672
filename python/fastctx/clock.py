"""Wall-clock time as integer milliseconds, and its RFC 3339 form for JSON bodies."""

from __future__ import annotations

import functools
import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    # Most timestamps written in one second share it (creation, expiry a day on): format once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch as an RFC 3339 UTC timestamp, e.g. 2026-11-24T01:30:50.123Z."""
    seconds, millis = divmod(ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"
