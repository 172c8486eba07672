"""Settings: one immutable record, read from FASTCTX_* environment variables or given directly."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

ENV_PREFIX = "FASTCTX_"
BACKEND_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
HTTP_MODES = ("1", "2", "auto")
LOG_FORMATS = ("text", "json")
REDIS_PORT = 6379
# What a stored frame can hold (MAX_PAYLOAD_LEN in rust_core/src/frame.rs): no document may
# be allowed to grow past it.
MAX_FRAME_PAYLOAD = 64 * 1024 * 1024
MAX_INTEGER = 2**53  # exact as a float and as a JSON number, far below 64-bit limits
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_TENANT = "default"


# Bounds of FASTCTX_MAX_HEADER_BYTES: granian's HTTP/1 buffer takes no less than 8 KiB.
MIN_HEADER_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024
DEFAULT_HEADER_BYTES = 64 * 1024
# The highest FASTCTX_TENANT_RATE and FASTCTX_TENANT_BYTES: far past what a deployment serves
# or keeps, so that a typo is caught.
MAX_RATE = 10_000_000
MAX_TENANT_BYTES = 1 << 50


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything a fastctx process can be told; every field has a FASTCTX_<NAME> variable."""

    backend: str = "memory://"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # HTTP versions `fastctx serve` speaks: "1" (HTTP/1.1), "2" (HTTP/2 with prior knowledge),
    # or "auto" (both). HTTP/1.1 alone: granian's auto mode costs each connection about 11 KiB
    # more, which idle event streams and pooled keep-alive connections pay for as long as open.
    http: str = "1"
    cache_bytes: int = 256 * 1024 * 1024
    default_ttl: int = 86400
    # The largest request body: what a create, a replace or one patch may send.
    max_context_bytes: int = 1024 * 1024
    # The largest a stored document may grow to by patches, each within max_context_bytes.
    max_document_bytes: int = 16 * 1024 * 1024
    # The largest a request's headers may be, names and values; past it, 431.
    max_header_bytes: int = DEFAULT_HEADER_BYTES
    api_keys: str = dataclasses.field(default="", repr=False)  # secrets: never in a repr
    log_level: str = "info"
    # "text" for people, "json" (one object per line) for log collectors.
    log_format: str = "text"
    # One line per request: method, route template, status, duration (never a path or a body).
    access_log: bool = False
    # Bound on how long this node serves a cached context without asking the backend, on top of
    # the invalidations the backend pushes when another node writes.
    cache_max_age_ms: int = 60_000
    # Per-call timeout for backend commands, in seconds.
    backend_timeout: float = 2.0
    # Seconds a request body may take to arrive in full; a slower one is refused with 400.
    body_timeout: float = 30.0
    # Seconds a request's head (line and headers) may take to arrive; past it granian closes
    # the connection. Under `fastctx serve` only (it is granian's own setting).
    header_timeout: float = 10.0
    # Consecutive failed backend calls that open the circuit breaker (0: never open it), and
    # the seconds it stays open before one call probes the backend again.
    breaker_failures: int = 5
    breaker_reset: float = 0.5
    # Requests a worker holds at once (0: no bound); past it, requests are shed with 503.
    max_inflight: int = 128
    # Event streams (SSE and MCP) a worker holds open at once (0: no bound); past it, 503.
    max_streams: int = 10_000
    # Replicas that must acknowledge a write (Redis WAIT) before it is acknowledged; 0: none.
    write_replicas: int = 0
    # Origins (scheme://host[:port], comma-separated, or "*") whose browser pages may use /mcp
    # besides loopback ones; requests without an Origin header (non-browser clients) always may.
    mcp_origins: str = ""
    # Seconds an MCP session lives without a request; every request starts the count again.
    mcp_session_idle: int = 3600
    # The server's canonical URL (https://ctx.example.com): the resource OAuth tokens name.
    public_url: str = ""
    # Authorization servers (issuer URLs, comma-separated) whose access tokens are accepted
    # beside API keys; their tokens must name this server (oauth_audience) as their audience.
    oauth_issuer: str = ""
    # The audiences accepted (comma-separated); unset: the public URL and its /mcp.
    oauth_audience: str = ""
    # The access token's claim that names the tenant.
    oauth_tenant_claim: str = "sub"
    # Requests a second each tenant may make across the deployment (a burst of as many), and
    # per-tenant overrides: "100,acme=500,globex=0" (0: no bound); "" or "0": off.
    tenant_rate: str = ""
    # Bytes of contexts each tenant may keep stored, with overrides as for tenant_rate.
    tenant_bytes: str = ""
    # Keys that seal what is stored: "kid:base64key,..." (32-byte AES-256 keys); the first
    # seals new writes, every one opens. "": nothing is sealed.
    encryption_keys: str = dataclasses.field(default="", repr=False)  # never in a log line

    def __post_init__(self) -> None:
        positive = (
            "port",
            "workers",
            "default_ttl",
            "max_context_bytes",
            "max_document_bytes",
            "mcp_session_idle",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a positive integer")
        if not self.max_context_bytes <= self.max_document_bytes <= MAX_FRAME_PAYLOAD:
            # A document created whole must fit what a document may grow to.
            raise ValueError(
                f"{ENV_PREFIX}MAX_DOCUMENT_BYTES must be at least {ENV_PREFIX}MAX_CONTEXT_BYTES "
                f"({self.max_context_bytes}) and at most {MAX_FRAME_PAYLOAD}, got "
                f"{self.max_document_bytes}"
            )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            # Sizes and times go on to Rust and Redis as 64-bit integers.
            if isinstance(value, int) and value > MAX_INTEGER:
                raise ValueError(f"{ENV_PREFIX}{field.name.upper()} is too large: {value}")
        if not MIN_HEADER_BYTES <= self.max_header_bytes <= MAX_HEADER_BYTES:
            raise ValueError(
                f"{ENV_PREFIX}MAX_HEADER_BYTES must be from {MIN_HEADER_BYTES} to "
                f"{MAX_HEADER_BYTES}, got {self.max_header_bytes}"
            )
        if self.port > 65535:
            raise ValueError(f"{ENV_PREFIX}PORT must be at most 65535, got {self.port}")
        if not self.host.strip():
            raise ValueError(f"{ENV_PREFIX}HOST cannot be empty")
        if self.cache_bytes < 0 or self.cache_max_age_ms < 0:
            raise ValueError("cache sizes and ages cannot be negative")
        if not self.body_timeout > 0:
            raise ValueError(f"{ENV_PREFIX}BODY_TIMEOUT must be a positive number of seconds")
        if not 0.001 <= self.header_timeout <= 60:
            raise ValueError(f"{ENV_PREFIX}HEADER_TIMEOUT must be between 0.001 and 60 seconds")
        for name in ("breaker_failures", "max_inflight", "max_streams", "write_replicas"):
            if getattr(self, name) < 0:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} must be 0 or a positive integer")
        if not 0 < self.backend_timeout < 3600 or not 0 < self.breaker_reset < 3600:
            raise ValueError(
                f"{ENV_PREFIX}BACKEND_TIMEOUT and {ENV_PREFIX}BREAKER_RESET must be positive "
                "numbers of seconds, under an hour"
            )
        try:
            scheme = urlsplit(self.backend).scheme
        except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
            raise ValueError(f"{ENV_PREFIX}BACKEND is not a URL: {exc}") from None
        if scheme not in BACKEND_SCHEMES:
            raise ValueError(
                f"unsupported backend URL {masked_url(self.backend)!r}: use memory://, "
                "redis://host:port/db, rediss://host:port/db or redis+cluster://host:port,..."
            )
        backend_endpoints(self.backend)  # a port or a database that is not a number
        if self.write_replicas and urlsplit(self.backend).scheme == "memory":
            raise ValueError(
                f"{ENV_PREFIX}WRITE_REPLICAS needs a Redis backend; memory:// has none"
            )
        if self.http not in HTTP_MODES:
            raise ValueError(f"{ENV_PREFIX}HTTP must be one of {', '.join(HTTP_MODES)}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"{ENV_PREFIX}LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"{ENV_PREFIX}LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
        self.tenants()  # validates the key list at start, not on the first request
        self.oauth_issuers()
        self.tenant_rates()
        self.tenant_quotas()
        self.encryption_ring()
        self.oauth_audiences()

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
        for position, item in enumerate(self.api_keys.split(","), 1):
            item = item.strip()
            if not item:
                continue
            tenant, sep, key = item.partition(":")
            if not sep or not key or not TENANT_PATTERN.match(tenant):
                # Named by position: an entry without its colon may be a bare key.
                raise ValueError(
                    f"{ENV_PREFIX}API_KEYS entries are tenant:key with tenant matching "
                    f"{TENANT_PATTERN.pattern}; entry {position} is not"
                )
            if key in keys and keys[key] != tenant:
                raise ValueError(f"{ENV_PREFIX}API_KEYS gives one key to two tenants")
            keys[key] = tenant
        return keys

    def tenant_rates(self) -> tuple[int, dict[str, int]]:
        """The requests a second a tenant may make (0: no bound), and the tenants that differ."""
        return _tenant_limits(self.tenant_rate, "TENANT_RATE", "requests a second", MAX_RATE)

    def tenant_quotas(self) -> tuple[int, dict[str, int]]:
        """The bytes a tenant may keep stored (0: no bound), and the tenants that differ."""
        return _tenant_limits(self.tenant_bytes, "TENANT_BYTES", "bytes", MAX_TENANT_BYTES)

    def encryption_ring(self) -> list[tuple[str, bytes]]:
        """The (key id, key) pairs of FASTCTX_ENCRYPTION_KEYS, the sealing one first; empty
        when nothing is sealed. Errors name an entry by its position, never its key."""
        ring: list[tuple[str, bytes]] = []
        for position, item in enumerate(self.encryption_keys.split(","), 1):
            item = item.strip()
            if not item:
                continue
            kid, sep, encoded = item.partition(":")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                key = b""
            if not sep or not TENANT_PATTERN.match(kid) or len(key) != 32:
                raise ValueError(
                    f"{ENV_PREFIX}ENCRYPTION_KEYS is id:key entries, each id of"
                    f" {TENANT_PATTERN.pattern} and each key 32 bytes in base64 (AES-256);"
                    f" entry {position} is not"
                )
            if any(kid == seen for seen, _ in ring):
                raise ValueError(f"{ENV_PREFIX}ENCRYPTION_KEYS names key {kid!r} twice")
            ring.append((kid, key))
        return ring

    def oauth_issuers(self) -> list[str]:
        """The trusted authorization servers; empty when OAuth is off."""
        issuers = _urls(self.oauth_issuer, "OAUTH_ISSUER")
        if issuers and not self.public_url:
            raise ValueError(
                f"{ENV_PREFIX}OAUTH_ISSUER needs {ENV_PREFIX}PUBLIC_URL, the URL clients reach "
                "this server at: it is the resource their access tokens must name"
            )
        if issuers and not self.oauth_tenant_claim.strip():
            raise ValueError(f"{ENV_PREFIX}OAUTH_TENANT_CLAIM cannot be empty")
        return issuers

    def oauth_audiences(self) -> list[str]:
        """The audiences an access token may name: this server, as its public URL says."""
        public = _urls(self.public_url, "PUBLIC_URL")
        if len(public) > 1:
            raise ValueError(f"{ENV_PREFIX}PUBLIC_URL is one URL")
        given = _urls(self.oauth_audience, "OAUTH_AUDIENCE")
        if given or not public:
            return given
        base = public[0].rstrip("/")
        return [base, base + "/", base + "/mcp"]

    @property
    def resource(self) -> str:
        """The public URL without a trailing slash: what OAuth calls this resource server."""
        return self.public_url.strip().rstrip("/")


def _urls(value: str, name: str) -> list[str]:
    """A comma-separated list of absolute URLs: https, or http on a loopback host."""
    urls = [item.strip() for item in value.split(",") if item.strip()]
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{ENV_PREFIX}{name} must be absolute http(s) URLs, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"{ENV_PREFIX}{name} takes URLs without a query or fragment")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"{ENV_PREFIX}{name} must be https (http only on loopback): {url}")
    return urls


def masked_url(url: str) -> str:
    """The URL with its password replaced by ***: fit for a log line or an error message."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or not password:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def backend_endpoints(url: str) -> list[tuple[str, int] | str]:
    """The (host, port) pairs, or the unix socket path, that a backend URL names.

    Raises ValueError naming what is wrong (a port or a database that is not a number): the
    server refuses such a setting at start rather than failing in each worker.
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "memory":
        return []
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"backend URL {masked_url(url)!r} names no socket path")
        return [parts.path]
    hosts = parts.netloc.rpartition("@")[2]
    db = parts.path.strip("/")
    if scheme.endswith("+cluster"):
        if db not in ("", "0"):
            raise ValueError(
                f"backend URL {masked_url(url)!r}: a Redis Cluster has only database 0"
            )
    elif db and not db.isdigit():
        raise ValueError(
            f"backend URL {masked_url(url)!r}: the database must be a number, got {db!r}"
        )
    endpoints: list[tuple[str, int] | str] = []
    for node in hosts.split(","):
        node = node.strip()
        name, colon, port = node.rpartition(":")
        if not colon or "]" in port:  # no port given: host or [ipv6]
            name, port = node, str(REDIS_PORT)
        if not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(
                f"backend URL {masked_url(url)!r}: {node!r} is not host:port with a port number"
            )
        endpoints.append((unquote(name).strip("[]") or "127.0.0.1", int(port)))
    return endpoints


def _convert(name: str, raw: str, kind: Any) -> Any:
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()} must be true or false, got {raw!r}")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a number, got {raw!r}") from None
    return raw


def _tenant_limits(value: str, name: str, unit: str, highest: int) -> tuple[int, dict[str, int]]:
    """ "N,tenant=N,...": the bound every tenant has (0: none), and the tenants that differ."""
    default, overrides = 0, {}
    for position, item in enumerate(value.split(","), 1):
        item = item.strip()
        if not item:
            continue
        tenant, sep, limit = item.rpartition("=")
        if (
            not limit.isdigit()
            or int(limit) > highest
            or (sep and not TENANT_PATTERN.match(tenant))
        ):
            raise ValueError(
                f"{ENV_PREFIX}{name} is a bound and tenant=bound entries, each a whole number of"
                f" {unit} up to {highest} (0: no bound); entry {position} is not"
            )
        if sep:
            overrides[tenant] = int(limit)
        else:
            default = int(limit)
    return default, overrides
