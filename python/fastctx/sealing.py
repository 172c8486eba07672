"""Encryption at rest (FASTCTX_ENCRYPTION_KEYS): what a node seals before the backend sees it.

With a key ring, every frame's payload is sealed (AES-256-GCM, `_core.Keyring`; the frame's
header stays in the clear for the backend's scripts), bound to the context's name,
`tenant/token`, so that a value copied under another key name does not open. Each patch of
a context's log is sealed too, bound to the name and its version, and stored as base64 text:
the same bytes go into the change event that carries it, and a change stream holds text.
A session's `meta` is sealed as a frame's payload is, bound to `tenant/session/<id>`.

Without a ring nothing is sealed; with one, what was stored before it (frames, patches, metas
in the clear) is still read as it is, and `fastctx rekey` seals it.
"""

from __future__ import annotations

import base64
import binascii

from fastctx import _core

#: How a sealed patch starts: the base64 of a sealed value's magic and format (b"FE\x01").
SEALED_TEXT = b"RkUB"


class Sealing:
    """Seals and opens a context's stored parts; `ring` None: all of it passes as it is."""

    __slots__ = ("ring",)

    def __init__(self, ring: _core.Keyring | None) -> None:
        self.ring = ring

    @staticmethod
    def name(tenant: str, token: str) -> bytes:
        """The associated data of a context's frame."""
        return f"{tenant}/{token}".encode()

    def seal_patch(self, patch: bytes, name: bytes, version: int) -> bytes:
        """The patch as stored in the log and the change event of `version`."""
        if self.ring is None:
            return patch
        return base64.b64encode(self.ring.seal(patch, b"%s#%d" % (name, version)))

    def open_patch(self, stored: bytes, name: bytes, version: int) -> bytes:
        """A patch as the log or an event holds it, opened; one in the clear as it is."""
        if not stored.startswith(SEALED_TEXT):
            return stored  # JSON (an array): written in the clear
        if self.ring is None:
            raise _core.FrameError(
                "a patch is sealed, and FASTCTX_ENCRYPTION_KEYS is not set to open it"
            )
        try:
            sealed = base64.b64decode(stored, validate=True)
        except binascii.Error:
            raise _core.FrameError("a sealed patch is not base64") from None
        return self.ring.open(sealed, b"%s#%d" % (name, version))

    def seal_meta(self, meta: bytes, tenant: str, session: str) -> bytes:
        """A session's `meta` as stored (base64 text when sealed: a hash field holds text)."""
        if self.ring is None:
            return meta
        return base64.b64encode(self.ring.seal(meta, f"{tenant}/session/{session}".encode()))

    def open_meta(self, stored: bytes, tenant: str, session: str) -> bytes:
        if not stored.startswith(SEALED_TEXT):
            return stored
        if self.ring is None:
            raise _core.FrameError(
                "a session's meta is sealed, and FASTCTX_ENCRYPTION_KEYS is not set to open it"
            )
        sealed = base64.b64decode(stored)
        return self.ring.open(sealed, f"{tenant}/session/{session}".encode())


def key_id(stored: bytes) -> str | None:
    """The key a stored patch or meta is sealed under; None for one in the clear."""
    if not stored.startswith(SEALED_TEXT):
        return None
    return _core.sealed_key_id(base64.b64decode(stored))


#: Nothing sealed.
PLAIN = Sealing(None)
