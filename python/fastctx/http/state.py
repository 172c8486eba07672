"""Typed access to what the Starlette routes need from the app: sessions, settings, tenant."""

from __future__ import annotations

from starlette.requests import Request

from fastctx.config import Settings
from fastctx.sessions import SessionManager

TENANT_SCOPE_KEY = "fastctx.tenant"


def sessions(request: Request) -> SessionManager:
    found: SessionManager = request.app.state.sessions
    return found


def settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def tenant(request: Request) -> str:
    """Set by `Front` before any /v1 or /mcp request goes on."""
    found: str = request.scope[TENANT_SCOPE_KEY]
    return found
