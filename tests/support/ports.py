"""Free TCP ports on loopback for the processes the tests start (never Redis's own 6379)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ports:
    """Free ports, none given twice: free_port() may give a port again while nothing listens on
    it yet, as when several processes get their ports before any of them starts."""

    def __init__(self) -> None:
        self._taken: set[int] = set()

    def take(self) -> int:
        while (port := free_port()) in self._taken:
            pass
        self._taken.add(port)
        return port


def held_port() -> socket.socket:
    """A port held bound but never listening: connections to it are refused, and no process
    started later can take it over. Close the socket to give the port back."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    return held
