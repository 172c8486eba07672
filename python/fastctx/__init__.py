"""fastctx: store a JSON context once, pass a 22-character token instead of the payload."""

from fastctx._core import __version__
from fastctx.client import AsyncClient, Client, Event
from fastctx.errors import (
    BadRequest,
    FastctxError,
    HeadersTooLarge,
    InvalidPatch,
    NotFound,
    PathNotFound,
    PayloadTooLarge,
    RateLimited,
    StorageQuotaExceeded,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    VersionConflict,
    VersionGone,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Event",
    "FastctxError",
    "HeadersTooLarge",
    "InvalidPatch",
    "NotFound",
    "PathNotFound",
    "PayloadTooLarge",
    "RateLimited",
    "StorageQuotaExceeded",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "VersionConflict",
    "VersionGone",
    "__version__",
]
