"""The REST interface: contexts, sessions, change streams and the operator's routes.

`fastctx.http:app` (built from the environment on first use) and `create_app` stay here for
those who serve or embed fastctx by these names; the app itself is assembled in `fastctx.app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastctx.app import Front
    from fastctx.app import create_app as create_app

    app: Front


def __getattr__(name: str) -> Any:
    # Looked up on first use: importing the package reads no environment, and fastctx.http
    # stays below fastctx.app, which assembles the REST routes with MCP.
    if name in ("app", "create_app"):
        from fastctx.app import create_app

        if name == "create_app":
            return create_app
        globals()["app"] = created = create_app()
        return created
    raise AttributeError(name)
