"""`fastctx serve`: run the server on granian; every flag has a FASTCTX_* variable."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import importlib.util
import ipaddress
import logging
import logging.config
import os
import resource
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fastctx import tracing
from fastctx._core import __version__
from fastctx.config import (
    HTTP_MODES,
    LOG_FORMATS,
    LOG_LEVELS,
    Settings,
    backend_endpoints,
    masked_url,
)
from fastctx.logs import logging_config

if TYPE_CHECKING:
    from fastctx.app import Front

logger = logging.getLogger("fastctx")
GRACEFUL_STOP_SECONDS = 5
# granian's bound on the requests a worker holds at once. An event stream holds its request
# for as long as its client listens, so the bound is what the open-file limit allows; shedding
# work that takes too long is Guard's job (FASTCTX_MAX_INFLIGHT), which does not count streams.
MIN_CONCURRENT_REQUESTS = 1024
# The cyclic collector's first threshold in a worker (CPython's default is 700). A request
# frees what it allocates by reference counting, so the count of live container objects only
# crosses 700 because 64 requests are in flight at once; each such crossing traversed them all
# for nothing. At 10,000 a worker answering tools/call on 64 connections collected nothing in
# 117,600 requests, where 700 cost 2,360 collections; cyclic garbage (an exception's frames)
# waits for at most 10,000 objects.
GC_THRESHOLD = 10_000
# What `pip install "fastctx[server]"` adds (by import name), checked before anything starts.
SERVER_PACKAGES = ("granian", "starlette", "uvloop", "hiredis", "prometheus_client", "jwt")
# How long the start-up check waits for the backend to accept a connection.
BACKEND_PROBE_SECONDS = 1.0


class StartupError(Exception):
    """What stops `fastctx serve` before it starts: said in one line, exit status 2."""


def _raise_open_files() -> int:
    """Raise the soft open-file limit to the hard one (each connection is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastctx", description="fastctx context server")
    parser.add_argument("--version", action="version", version=f"fastctx {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP API",
        description="Serve the HTTP API on granian. Flags override FASTCTX_* variables.",
    )
    serve.add_argument("--backend", help="memory:// (default), redis://host:port/db, rediss://…")
    serve.add_argument("--host", help="address to bind (FASTCTX_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (FASTCTX_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (FASTCTX_WORKERS, default 1)")
    serve.add_argument(
        "--http", choices=HTTP_MODES, help="HTTP versions: 1, 2 or auto (FASTCTX_HTTP, default 1)"
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="FASTCTX_LOG_LEVEL, default info")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text, or json: one object per line (FASTCTX_LOG_FORMAT, default text)",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        help="one line per request: method, route template, status, duration "
        "(FASTCTX_ACCESS_LOG, default off)",
    )
    rekey = commands.add_parser(
        "rekey",
        help="seal every stored context under the first of FASTCTX_ENCRYPTION_KEYS",
        description="Write again, under the first key of FASTCTX_ENCRYPTION_KEYS, every context"
        " that has a part sealed under another key or stored in the clear. Each is folded into"
        " one base at its version (its earlier versions are no longer kept); serving nodes go"
        " on serving meanwhile.",
    )
    rekey.add_argument(
        "--backend", help="redis://host:port/db or redis+cluster://… (FASTCTX_BACKEND)"
    )
    return parser


def rekey(settings: Settings) -> int:
    """`fastctx rekey`: every context of the backend sealed under the first key."""
    if not settings.encryption_ring():
        raise StartupError("fastctx rekey seals under FASTCTX_ENCRYPTION_KEYS, which is not set")
    if urlsplit(settings.backend).scheme == "memory":
        raise StartupError("memory:// keeps contexts inside the serving process: nothing to rekey")
    from fastctx.backends import open_backend
    from fastctx.registry import Registry
    from fastctx.sessions import SessionManager

    async def run() -> tuple[int, int, int, int]:
        backend = open_backend(settings)
        await backend.start()
        registry = Registry(backend, settings)
        sessions = SessionManager(backend, registry)
        rewritten = seen = metas = resealed = 0
        try:
            async for tenant, token in backend.contexts.tokens():
                seen += 1
                rewritten += await registry.reseal(tenant, token)
            async for tenant, session, meta in backend.sessions.metas():
                metas += 1
                resealed += await sessions.reseal(tenant, session, meta)
        finally:
            await backend.close()
        return seen, rewritten, metas, resealed

    seen, rewritten, metas, resealed = asyncio.run(run())
    primary = settings.encryption_ring()[0][0]
    print(
        f"fastctx rekey: {rewritten} of {seen} contexts and {resealed} of {metas} session metas"
        f" written again under key {primary}"
    )
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tune_collector() -> None:
    """Keep the cyclic collector to what a server's requests leave behind.

    The heap a worker starts with (modules, classes, the app) lives as long as the worker, yet a
    full collection walks it every time: measured on tools/call context_get at 64 connections,
    a full collection every ~0.5 s took ~16 ms, 5% of the worker's time with the young ones.
    Frozen, it is left out of collections (a full one then took 0.2 ms).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def worker_app() -> Front:
    """The app as each `fastctx serve` worker runs it: built, then its start-up heap frozen.

    Only here: an application that mounts create_app()'s app owns its process and its collector.
    """
    from fastctx.http import create_app

    app = create_app()
    tune_collector()
    return app


def check_bind(host: str, port: int) -> str:
    """The address to bind for `host`, once a socket of ours could bind it with `port`.

    Before granian starts: it would fail with a traceback, after its workers were spawned.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        raise StartupError(
            f"cannot bind host {host!r}: it is neither an IP address nor a name that resolves"
        ) from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As granian binds: a port whose last connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} is in use on {host}: stop what listens there or choose "
                    "another with --port or FASTCTX_PORT"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartupError(
                    f"cannot bind {where}: {host} is not an address of this machine"
                ) from None
            raise StartupError(f"cannot bind {where}: {exc.strerror or exc}") from None
    return str(address[0])


def backend_unreachable(url: str) -> str | None:
    """Why no endpoint of the backend accepts a connection, or None when one does."""
    reason = None
    for endpoint in backend_endpoints(url):
        try:
            if isinstance(endpoint, str):
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.settimeout(BACKEND_PROBE_SECONDS)
                    probe.connect(endpoint)
            else:
                socket.create_connection(endpoint, BACKEND_PROBE_SECONDS).close()
            return None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
    return reason


def serve(settings: Settings) -> int:
    missing = [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise StartupError(
            f"fastctx serve needs the server's packages, and {', '.join(missing)} "
            "is not installed: pip install 'fastctx[server]'"
        )
    if tracing.wanted():  # before the workers start, which would each fail on it
        unavailable = tracing.missing_packages()
        if unavailable is not None:
            raise StartupError(unavailable)
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings, HTTP2Settings
    from granian.log import LogLevels

    if urlsplit(settings.backend).scheme == "memory" and settings.workers > 1:
        raise StartupError(
            "memory:// keeps contexts inside one process, so it serves with one worker; "
            f"--workers {settings.workers} would give each worker its own separate data. "
            "Use a redis:// backend for more workers."
        )
    address = check_bind(settings.host, settings.port)
    unreachable = backend_unreachable(settings.backend)
    if unreachable is not None:
        logger.warning(
            "the backend %s cannot be reached (%s); fastctx serves anyway and connects once it "
            "answers: until then /readyz answers 503, and so does every request that needs it",
            masked_url(settings.backend),
            unreachable,
        )
    if not settings.tenants() and not _is_loopback(settings.host):
        logger.warning(
            "FASTCTX_API_KEYS is not set and the server binds %s: anyone who can reach it can "
            "read and change every context",
            settings.host,
        )
    # Workers are separate processes: they build the app from the same settings via the env.
    os.environ.update(settings.to_env())
    open_files = _raise_open_files()  # before the workers start: they inherit it
    Granian(
        "fastctx.cli:worker_app",
        factory=True,
        address=address,
        port=settings.port,
        workers=settings.workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes(settings.http),
        websockets=False,  # fastctx has no WebSocket routes: no upgrade is ever taken
        log_level=LogLevels(settings.log_level),
        log_dictconfig=logging_config(settings),
        # Event streams stay open until their client leaves, which would hold a graceful stop
        # forever; past this, workers are killed and stream clients resume with Last-Event-ID.
        workers_kill_timeout=GRACEFUL_STOP_SECONDS,
        backpressure=max(MIN_CONCURRENT_REQUESTS, open_files),
        # A request head that trickles in (slowloris) holds a connection until this closes it.
        # A head far past FASTCTX_MAX_HEADER_BYTES is refused (431) before it is all read (the
        # buffer bounds it only roughly: twice the bound, so that what is just past it reaches
        # the app, which refuses it with a problem document).
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.header_timeout * 1000),
            max_buffer_size=2 * settings.max_header_bytes,
        ),
        http2_settings=HTTP2Settings(max_headers_size=2 * settings.max_header_bytes),
    ).serve()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "rekey":
        try:
            settings = Settings.from_env(backend=args.backend)
            logging.config.dictConfig(logging_config(settings))
            return rekey(settings)
        except (ValueError, StartupError) as exc:
            print(f"fastctx: {exc}", file=sys.stderr)
            return 2
    try:
        settings = Settings.from_env(
            backend=args.backend,
            host=args.host,
            port=args.port,
            workers=args.workers,
            http=args.http,
            log_level=args.log_level,
            log_format=args.log_format,
            access_log=args.access_log,
        )
    except ValueError as exc:
        print(f"fastctx: {exc}", file=sys.stderr)
        return 2
    logging.config.dictConfig(logging_config(settings))
    try:
        return serve(settings)
    except StartupError as exc:
        print(f"fastctx: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
