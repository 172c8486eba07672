"""The one exception hierarchy of fastctx, shared by the server and the client library."""

from __future__ import annotations

from typing import ClassVar


class FastctxError(Exception):
    """Base of every fastctx error; `status` is the HTTP status it maps to."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        #: Extra response headers that belong with this error (e.g. WWW-Authenticate).
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return f"urn:fastctx:problem:{self.slug}"


class BadRequest(FastctxError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class MalformedJson(BadRequest):
    slug = "malformed-json"
    title = "Malformed JSON"


class Unauthorized(FastctxError):
    status = 401
    slug = "unauthorized"
    title = "Missing or unknown API key"


class Forbidden(FastctxError):
    """The request is understood and authenticated, but not allowed (a foreign /mcp Origin)."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class InvalidAccessToken(Unauthorized):
    """An OAuth access token that does not verify; the detail says why."""

    title = "Invalid access token"
    oauth_error: ClassVar[str] = "invalid_token"  # RFC 6750's error code


class InsufficientScope(Forbidden):
    """A valid access token without the scope the request needs (insufficient_scope)."""

    title = "Insufficient scope"
    oauth_error: ClassVar[str] = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"the access token does not grant {scope}")
        self.scope = scope


class NotFound(FastctxError):
    status = 404
    slug = "not-found"
    title = "Not found"


class PathNotFound(NotFound):
    """The context exists, but the JSON Pointer a read names (`path`) leads to nothing in it."""

    slug = "path-not-found"
    title = "Nothing at this path"


class MethodNotAllowed(FastctxError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class NotAcceptable(FastctxError):
    """The request's `Accept` allows none of the media types the route answers with."""

    status = 406
    slug = "not-acceptable"
    title = "Not acceptable"


class VersionGone(FastctxError):
    """The version asked for (`?version=`) is no longer kept."""

    status = 410
    slug = "version-gone"
    title = "Version no longer kept"


class VersionConflict(FastctxError):
    status = 412
    slug = "version-conflict"
    title = "Version does not match"


class PayloadTooLarge(FastctxError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class StorageQuotaExceeded(PayloadTooLarge):
    """The write would take the tenant past the bytes it may keep stored (FASTCTX_TENANT_BYTES);
    nothing was changed. Writes that shrink what it keeps, and deletes, still pass."""

    slug = "storage-quota-exceeded"
    title = "Storage quota exceeded"


class RateLimited(FastctxError):
    """The tenant is over its FASTCTX_TENANT_RATE; `retry_after` is in seconds."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(
        self, detail: str = "", retry_after: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail, {**(headers or {}), "Retry-After": str(retry_after)})
        self.retry_after = retry_after


class HeadersTooLarge(FastctxError):
    """The request's headers are over FASTCTX_MAX_HEADER_BYTES."""

    status = 431
    slug = "headers-too-large"
    title = "Request header fields too large"


class UnsupportedMediaType(FastctxError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InvalidPatch(FastctxError):
    status = 422
    slug = "invalid-patch"
    title = "Patch cannot be applied"


class BadGateway(FastctxError):
    """A service could not use fastctx's answer (e.g. ContextMiddleware after a 500)."""

    status = 502
    slug = "bad-gateway"
    title = "Bad gateway"


class Unavailable(FastctxError):
    """The backend cannot answer now; `retry_after` is in seconds."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str = "", retry_after: int = 1) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class BackendError(Unavailable):
    """The storage backend failed or timed out.

    `unsent`: the command never reached the backend, or the backend refused it without running
    it, so sending it again cannot apply it twice. Otherwise it may have run.
    """

    slug = "backend-unavailable"
    title = "Backend unavailable"

    def __init__(self, detail: str = "", retry_after: int = 1, *, unsent: bool = False) -> None:
        super().__init__(detail, retry_after)
        self.unsent = unsent


class NotDurable(Unavailable):
    """A write was applied, but fewer replicas than asked for acknowledged it in time."""

    slug = "write-not-durable"
    title = "Write may not be durable"


# The statuses the server answers with, each with its class: the same list the OpenAPI document
# gives, operation by operation (403 and 406 come from /mcp only, as JSON-RPC errors there).
BY_STATUS: dict[int, type[FastctxError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        NotAcceptable,
        VersionConflict,
        VersionGone,
        PayloadTooLarge,
        UnsupportedMediaType,
        InvalidPatch,
        RateLimited,
        HeadersTooLarge,
        Unavailable,
    )
}
