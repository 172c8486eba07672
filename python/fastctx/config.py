"""Settings: one immutable record, read from FASTCTX_* environment variables or given directly."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "FASTCTX_"
BACKEND_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_TENANT = "default"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything a fastctx process can be told; every field has a FASTCTX_<NAME> variable."""

    backend: str = "memory://"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    cache_bytes: int = 256 * 1024 * 1024
    default_ttl: int = 86400
    max_context_bytes: int = 1024 * 1024
    api_keys: str = ""
    log_level: str = "info"
    # Bound on how long this node serves a cached context without asking the backend, on top of
    # the invalidations the backend pushes when another node writes.
    cache_max_age_ms: int = 60_000
    # Per-call timeout for backend commands, in seconds.
    backend_timeout: float = 2.0
    # Origins (scheme://host[:port], comma-separated, or "*") whose browser pages may use /mcp
    # besides loopback ones; requests without an Origin header (non-browser clients) always may.
    mcp_origins: str = ""
    # Seconds an MCP session lives without a request; every request starts the count again.
    mcp_session_idle: int = 3600

    def __post_init__(self) -> None:
        positive = ("port", "workers", "default_ttl", "max_context_bytes", "mcp_session_idle")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a positive integer")
        if self.cache_bytes < 0 or self.cache_max_age_ms < 0:
            raise ValueError("cache sizes and ages cannot be negative")
        if urlsplit(self.backend).scheme not in BACKEND_SCHEMES:
            raise ValueError(
                f"unsupported backend URL {self.backend!r}: use memory://, "
                "redis://host:port/db, rediss://host:port/db or redis+cluster://host:port,..."
            )
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"{ENV_PREFIX}LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        self.tenants()  # validates the key list at start, not on the first request

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read FASTCTX_* variables; keyword overrides (e.g. CLI flags) win when not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            values[field.name] = _convert(field.name, raw, field.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in another process (server workers)."""
        return {
            ENV_PREFIX + field.name.upper(): str(getattr(self, field.name))
            for field in dataclasses.fields(self)
        }

    def tenants(self) -> dict[str, str]:
        """Map each API key to its tenant; empty when authentication is off."""
        keys: dict[str, str] = {}
        for item in self.api_keys.split(","):
            item = item.strip()
            if not item:
                continue
            tenant, sep, key = item.partition(":")
            if not sep or not key or not TENANT_PATTERN.match(tenant):
                raise ValueError(
                    f"{ENV_PREFIX}API_KEYS entries are tenant:key with tenant matching "
                    f"{TENANT_PATTERN.pattern}; got an entry for {tenant!r}"
                )
            if key in keys and keys[key] != tenant:
                raise ValueError(f"{ENV_PREFIX}API_KEYS gives one key to two tenants")
            keys[key] = tenant
        return keys


def _convert(name: str, raw: str, kind: Any) -> Any:
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a number, got {raw!r}") from None
    return raw
