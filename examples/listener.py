"""Prints each change to a session's contexts as it happens.

python examples/listener.py http://127.0.0.1:8000 <session id>
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from fastctx import Client


def of_version(data: Any, version: int) -> bool:
    """Whether `data` is the document at `version`, not a later one.

    An event's data is read when the event is sent, and may already be a later version's;
    each service appends itself to the trail with its one write, so the trail tells.
    """
    return isinstance(data, dict) and len(data.get("trail", ())) == version


def describe(version: int, kind: str, data: Any, before: dict[str, Any]) -> str:
    line = f"v{version} {kind}"
    if kind != "updated" or not of_version(data, version):
        return line
    changed = [key for key in data if key != "trail" and data[key] != before.get(key)]
    return f"{line} by {data['trail'][-1]}: {', '.join(changed)}"


def main() -> int:
    base_url, session = sys.argv[1], sys.argv[2]
    # SIGTERM ends the listener as Ctrl-C does: the stream is closed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    seen: dict[str, dict[str, Any]] = {}
    try:
        with Client(base_url) as fastctx:
            # "0-0": from the session's first event on, so nothing is missed while connecting.
            events = fastctx.events(session=session, include_data=True, last_event_id="0-0")
            print(f"listening to session {session}", flush=True)
            with events:
                for event in events:
                    before = seen.get(event.token or "", {})
                    print(describe(event.version, event.type, event.data, before), flush=True)
                    if of_version(event.data, event.version) and event.token is not None:
                        seen[event.token] = event.data
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
