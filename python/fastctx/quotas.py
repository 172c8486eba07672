"""Per-tenant quotas across the deployment: request rates (FASTCTX_TENANT_RATE), in leases, and
the bytes a tenant's contexts keep stored (FASTCTX_TENANT_BYTES).

A tenant's request budget is a token bucket in the backend, shared by every node: it holds at
most one second's worth of the tenant's rate (its burst) and fills at that rate. Asking the
backend on every request would add a round trip to each, even to reads this node answers from
its cache; so a node takes tokens a tenth of a second's worth at a time (a lease) and spends
them locally, for at most LEASE_SECONDS. When the bucket cannot fill a lease, the node refuses
the tenant without asking again until a lease's worth has come in: a tenant far over its rate
costs the backend a call a tenth of a second per node, not one per request. While the backend
answers, the deployment never admits more than the bucket grants (burst + rate x seconds);
what a lease leaves unspent when it lapses is lost, so a tenant spread over many nodes may be
held below its rate by up to one lease a node. While it cannot be reached, each node holds a
tenant to its rate by itself (a lease's worth each time one would have come in), so that what
a node can still serve (stale reads) is not refused for the bucket's sake.

A tenant's stored bytes are counted context by context in the backend, each context as its
base document and its patch log (what a write leaves stored), until it is deleted or expires.
A write is counted before it is made, and refused when it would add bytes past the quota: a
tenant never keeps more than its quota, except by writes to one context that race each other
from several nodes (each counted against the size the other replaces) and by contexts written
before the quota was set, which count from their next write.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict

from fastctx.backends import Quotas
from fastctx.clock import now_ms
from fastctx.errors import BackendError, RateLimited, StorageQuotaExceeded

#: Tokens a lease holds: this fraction of a second's worth of the rate (at least one).
LEASE_SHARE = 0.1
#: A lease's tokens are spent within this, or lost (so that idle nodes hold none for long).
LEASE_SECONDS = 1.0
#: Tenants whose leases a node keeps; the least recently seen ones go first.
LEASES_HELD = 100_000


class _Lease:
    __slots__ = ("lock", "refused_until", "tokens", "until")

    def __init__(self) -> None:
        self.tokens = 0
        self.until = 0.0  # time.monotonic() after which the tokens are lost
        self.refused_until = 0.0  # the bucket is empty until then: refuse without asking
        self.lock = asyncio.Lock()  # one lease taken at a time per tenant


class RateLimits:
    """Admits a tenant's request, or raises RateLimited (429) when it is over its rate."""

    def __init__(self, quotas: Quotas, default: int, overrides: dict[str, int]) -> None:
        self.quotas = quotas
        self.default = default
        self.overrides = overrides
        self._leases: OrderedDict[str, _Lease] = OrderedDict()

    async def admit(self, tenant: str) -> None:
        rate = self.overrides.get(tenant, self.default)
        if not rate:
            return
        lease = self._leases.get(tenant)
        if lease is None:
            lease = self._leases[tenant] = _Lease()
            if len(self._leases) > LEASES_HELD:
                self._leases.popitem(last=False)
        else:
            self._leases.move_to_end(tenant)
        now = time.monotonic()
        if lease.tokens and now < lease.until:
            lease.tokens -= 1
            return
        if now < lease.refused_until:
            raise self._refusal(rate, lease.refused_until - now)
        async with lease.lock:
            now = time.monotonic()
            if lease.tokens and now < lease.until:  # another request took a lease meanwhile
                lease.tokens -= 1
                return
            if now < lease.refused_until:  # ... or was refused one
                raise self._refusal(rate, lease.refused_until - now)
            want = max(1, int(rate * LEASE_SHARE))
            try:
                granted, wait_ms = await self.quotas.take(tenant, want, rate, rate)
            except BackendError:
                # The bucket cannot be reached: the request may still be served (a stale read,
                # say), so the node holds the tenant to its rate by itself meanwhile.
                lease.tokens, lease.until = want - 1, time.monotonic() + want / rate
                return
            now = time.monotonic()
            if granted < want:
                # The bucket is drained: ask again once a lease's worth has come in, not at
                # its next token (every node would ask for each one).
                lease.refused_until = now + max(wait_ms / 1000, want / rate)
            if not granted:
                lease.tokens = 0
                raise self._refusal(rate, lease.refused_until - now)
            lease.tokens, lease.until = granted - 1, now + LEASE_SECONDS

    @staticmethod
    def _refusal(rate: int, wait: float) -> RateLimited:
        seconds = max(1, math.ceil(wait))
        headers = {
            # draft-ietf-httpapi-ratelimit-headers: the policy, and that nothing is left of it.
            "RateLimit-Policy": f'"tenant";q={rate};w=1',
            "RateLimit": f'"tenant";r=0;t={seconds}',
        }
        return RateLimited(
            f"this tenant is over its {rate} requests a second; retry in {seconds} s",
            retry_after=seconds,
            headers=headers,
        )


class StorageQuotas:
    """Counts the bytes each context of a bounded tenant keeps, refusing what would pass the
    tenant's bound with StorageQuotaExceeded (413)."""

    def __init__(self, quotas: Quotas, default: int, overrides: dict[str, int]) -> None:
        self.quotas = quotas
        self.default = default
        self.overrides = overrides

    async def keep(self, tenant: str, token: str, size: int, expires_at: int) -> None:
        """Count `token` as keeping `size` bytes until `expires_at`, before the write that makes
        it so: raises StorageQuotaExceeded, and counts nothing, if that would add bytes past
        the tenant's quota."""
        quota = self.overrides.get(tenant, self.default)
        if not quota:
            return
        counted, total = await self.quotas.keep(
            tenant, quota, [(token, size, expires_at)], now_ms()
        )
        if not counted:
            raise StorageQuotaExceeded(
                f"this tenant keeps {total} bytes of the {quota} it may; the write would keep"
                f" {size} bytes in this context. Deletes, and writes that shrink a context, pass"
            )

    async def release(self, tenant: str, tokens: list[str]) -> None:
        """The contexts are gone: they keep nothing."""
        if tokens and self.overrides.get(tenant, self.default):
            await self.quotas.keep(tenant, 0, [(token, 0, 0) for token in tokens], now_ms())
