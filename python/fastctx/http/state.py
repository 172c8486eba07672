"""Typed access to what the app holds for every request: registry, sessions, settings, tenant."""

from __future__ import annotations

from starlette.requests import Request

from fastctx.config import Settings
from fastctx.registry import Registry
from fastctx.sessions import SessionManager

TENANT_SCOPE_KEY = "fastctx.tenant"


def registry(request: Request) -> Registry:
    found: Registry = request.app.state.registry
    return found


def sessions(request: Request) -> SessionManager:
    found: SessionManager = request.app.state.sessions
    return found


def settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def tenant(request: Request) -> str:
    """Set by `TenantMiddleware` before any /v1 route runs."""
    found: str = request.scope[TENANT_SCOPE_KEY]
    return found
