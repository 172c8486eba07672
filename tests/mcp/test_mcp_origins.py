"""Which browser origins may use /mcp (FASTCTX_MCP_ORIGINS)."""

from __future__ import annotations

from fastctx.mcp.endpoint import Origins


def test_by_default_only_loopback_pages_and_non_browsers_may() -> None:
    origins = Origins("")
    assert origins.allow(None)  # no Origin header: not a browser
    assert origins.allow(b"http://localhost:3000")
    assert origins.allow(b"http://127.0.0.1")
    assert origins.allow(b"http://[::1]:8080")
    assert not origins.allow(b"https://evil.example")
    assert not origins.allow(b"null")


def test_named_origins_are_allowed_exactly() -> None:
    origins = Origins("https://app.example.com, https://admin.example.com:8443/")
    assert origins.allow(b"https://app.example.com")
    assert origins.allow(b"HTTPS://APP.EXAMPLE.COM")
    assert origins.allow(b"https://admin.example.com:8443")
    assert not origins.allow(b"http://app.example.com")  # another scheme is another origin
    assert not origins.allow(b"https://app.example.com.evil.example")
    assert origins.allow(b"http://localhost")


def test_a_star_allows_every_origin() -> None:
    assert Origins("*").allow(b"https://anywhere.example")
