"""The names of everything a backend stores: one place, so that a key's format never drifts.

Every key of one context carries the hash tag `{tenant/token}`, and every key of one session
(or MCP session) `{tenant/session}`: on a Redis Cluster each lives on one slot, so the scripts
that change them run there whole. The formats are what data already stored was written under;
changing one orphans it.
"""

from __future__ import annotations

CONTEXT_PREFIX = "fc:c:"  # a context's frame
LOG_PREFIX = "fc:l:"  # a context's patch log (see fastctx.backends.patchlog)
SESSION_PREFIX = "fc:s:"  # a session's record
MEMBERS_PREFIX = "fc:m:"  # the tokens of a session's contexts
SESSION_EXPIRED_PREFIX = "fc:sx:"  # set once a session's `expired` event is appended
CONTEXT_STREAM_PREFIX = "fc:x:"  # a context's change stream
SESSION_STREAM_PREFIX = "fc:y:"  # the change stream of every context of a session
MCP_SESSION_PREFIX = "fc:mcp:"  # an MCP session's record
MCP_SUBSCRIPTIONS_PREFIX = "fc:mq:"  # an MCP session's subscriptions: token -> cursor
MCP_STREAM_PREFIX = "fc:n:"  # an MCP session's notifications
RATE_PREFIX = "fc:r:"  # a tenant's request budget (FASTCTX_TENANT_RATE)
KEPT_PREFIX = "fc:k:"  # the bytes each of a tenant's contexts keeps (FASTCTX_TENANT_BYTES)
KEPT_EXPIRY_PREFIX = "fc:kx:"  # when each of them expires

#: The change streams a node follows (on a cluster, by tracking these prefixes).
STREAM_PREFIXES = (CONTEXT_STREAM_PREFIX, SESSION_STREAM_PREFIX)


def context_id(tenant: str, token: str) -> str:
    """How a context is named across the process: cache keys, invalidations, hash tags."""
    return f"{tenant}/{token}"


def context_key(tenant: str, token: str) -> str:
    # The hash tag keeps every key of one context on one cluster slot; its content is the
    # context's id, which is also what the invalidation of this key names.
    return f"{CONTEXT_PREFIX}{{{tenant}/{token}}}"


def context_id_of(key: bytes) -> str:
    """The context id a context key names: fc:c:{tenant/token} -> tenant/token."""
    return key[len(CONTEXT_PREFIX) + 1 : -1].decode()


def log_key(tenant: str, token: str) -> str:
    """A context's patch log: in its context's slot, and outside the tracked prefix (the
    frame's header changes with every append, and that is what other nodes hear of)."""
    return f"{LOG_PREFIX}{{{tenant}/{token}}}"


def tenant_log_prefix(tenant: str) -> str:
    """What every log key of `tenant` starts with (scripts append `token}`)."""
    return f"{LOG_PREFIX}{{{tenant}/"


def tenant_context_prefix(tenant: str) -> str:
    """What every context key of `tenant` starts with (scripts append `token}`)."""
    return f"{CONTEXT_PREFIX}{{{tenant}/"


def context_stream(tenant: str, token: str) -> str:
    """The change stream of one context; its hash tag is the context's, as its key's."""
    return f"{CONTEXT_STREAM_PREFIX}{{{tenant}/{token}}}"


def stream_context(stream: str) -> tuple[str, str] | None:
    """(its context's key, its token) for a context's change stream; None for another stream."""
    if not stream.startswith(CONTEXT_STREAM_PREFIX):
        return None
    tag = stream[len(CONTEXT_STREAM_PREFIX) :]
    return CONTEXT_PREFIX + tag, tag[1:-1].rpartition("/")[2]


def tenant_stream_prefix(tenant: str) -> str:
    """What every context stream of `tenant` starts with (scripts append `token}`)."""
    return f"{CONTEXT_STREAM_PREFIX}{{{tenant}/"


def session_key(tenant: str, session: str) -> str:
    return f"{SESSION_PREFIX}{{{tenant}/{session}}}"


def members_key(tenant: str, session: str) -> str:
    return f"{MEMBERS_PREFIX}{{{tenant}/{session}}}"


def session_expired_key(tenant: str, session: str) -> str:
    """Set once a session's `expired` event is appended, so that no other node appends it."""
    return f"{SESSION_EXPIRED_PREFIX}{{{tenant}/{session}}}"


def session_stream(tenant: str, session: str) -> str:
    """The change stream of every context of one session."""
    return f"{SESSION_STREAM_PREFIX}{{{tenant}/{session}}}"


def mcp_session_key(tenant: str, session: str) -> str:
    return f"{MCP_SESSION_PREFIX}{{{tenant}/{session}}}"


def mcp_subscriptions_key(tenant: str, session: str) -> str:
    return f"{MCP_SUBSCRIPTIONS_PREFIX}{{{tenant}/{session}}}"


def mcp_stream(tenant: str, session: str) -> str:
    """The stream of an MCP session's notifications: what its GET stream sends, and resends."""
    return f"{MCP_STREAM_PREFIX}{{{tenant}/{session}}}"


def expired_target(key: bytes) -> tuple[str, str, str] | None:
    """("c" or "s", tenant, token or session) for an expired context or session key."""
    for kind, prefix in (("c", CONTEXT_PREFIX), ("s", SESSION_PREFIX)):
        start = prefix.encode() + b"{"
        if key.startswith(start) and key.endswith(b"}"):
            tenant, _, ident = key[len(start) : -1].decode(errors="replace").rpartition("/")
            return (kind, tenant, ident) if tenant and ident else None
    return None


def rate_key(tenant: str) -> str:
    """A tenant's token bucket, in a slot of its own tenant."""
    return f"{RATE_PREFIX}{{{tenant}}}"


def kept_keys(tenant: str) -> list[str]:
    """A tenant's stored bytes, context by context, and their expiries: in its rate key's slot."""
    return [f"{KEPT_PREFIX}{{{tenant}}}", f"{KEPT_EXPIRY_PREFIX}{{{tenant}}}"]
