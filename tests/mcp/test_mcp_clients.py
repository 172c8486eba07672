"""Real MCP clients against a real granian server: the official SDK (both eras) and fastmcp."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from fastmcp import Client as FastMcpClient
from mcp.client.client import Client as SdkClient

from support.pool import ServerPool

TOOLS = {
    "context_create",
    "context_get",
    "context_append",
    "context_update",
    "context_delete",
    "session_create",
    "session_get",
}
UNKNOWN_TOKEN = "0AbCdEfGhIjKlMnOpQrStU"


class Session:
    """The few calls the scenario needs, whichever client library is underneath."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.client: Any = None

    def open(self) -> AbstractAsyncContextManager[Any]:
        if self.kind == "fastmcp":
            self.client = FastMcpClient(self.url)
        else:
            self.client = SdkClient(
                self.url, mode="legacy" if self.kind == "sdk-legacy" else "auto"
            )
        return self.client  # type: ignore[no-any-return]

    async def tool_names(self) -> set[str]:
        listed = await self.client.list_tools()
        tools = listed if self.kind == "fastmcp" else listed.tools
        for tool in tools:
            assert tool.input_schema["type"] == "object", tool.input_schema
        return {tool.name for tool in tools}

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[bool, Any, str]:
        """(isError, structuredContent, the text of the first content item)."""
        if self.kind == "fastmcp":
            result = await self.client.call_tool(name, arguments, raise_on_error=False)
        else:
            result = await self.client.call_tool(name, arguments)
        return result.is_error, result.structured_content, result.content[0].text

    async def read(self, uri: str) -> str:
        result = await self.client.read_resource(uri)
        contents = result if self.kind == "fastmcp" else result.contents
        assert contents[0].mime_type == "application/json"
        return str(contents[0].text)

    async def templates(self) -> list[str]:
        listed = await self.client.list_resource_templates()
        items = listed if self.kind == "fastmcp" else listed.resource_templates
        return [item.uri_template for item in items]


async def _ok(session: Session, name: str, arguments: dict[str, Any]) -> Any:
    is_error, structured, text = await session.call(name, arguments)
    assert not is_error, text
    assert json.loads(text) == structured  # the same JSON, as a text content item
    return structured


async def scenario(session: Session) -> None:
    assert await session.tool_names() == TOOLS
    assert await session.templates() == ["ctx://{token}"]

    group = await _ok(session, "session_create", {"ttl": 600, "meta": {"user": "ada"}})
    created = await _ok(
        session, "context_create", {"data": {"turn": 1}, "session": group["session"]}
    )
    token = created["token"]
    assert created["version"] == 1
    assert created["expires_at"].endswith("Z")
    got = await _ok(session, "context_get", {"token": token})
    assert got == {"token": token, "version": 1, "data": {"turn": 1}}
    assert json.loads(await session.read(f"ctx://{token}")) == {"turn": 1}

    updated = await _ok(
        session, "context_update", {"token": token, "patch": {"user": "ada"}, "if_version": 1}
    )
    assert updated == {"token": token, "version": 2}
    appended = await _ok(
        session, "context_append", {"token": token, "path": "/log", "items": ["a", "b", "c"]}
    )
    assert appended == {"token": token, "version": 3}
    got = await _ok(session, "context_get", {"token": token, "path": "/log", "slice": "-2:"})
    assert got == {"token": token, "version": 3, "data": ["b", "c"]}
    is_error, _, text = await session.call("context_get", {"token": token, "path": "/none"})
    assert is_error
    assert "nothing at /none" in text
    view = await _ok(session, "session_get", {"session": group["session"]})
    assert view["meta"] == {"user": "ada"}
    assert view["contexts"] == [token]

    is_error, _, text = await session.call(
        "context_update", {"token": token, "patch": {"x": 1}, "if_version": 1}
    )
    assert is_error
    assert "version conflict" in text
    assert "version 3" in text

    assert await _ok(session, "context_delete", {"token": token}) == {"deleted": True}
    for name in ("context_get", "context_delete"):
        is_error, _, text = await session.call(name, {"token": token})
        assert is_error
        assert "no such context" in text
    is_error, _, text = await session.call("context_get", {"token": UNKNOWN_TOKEN})
    assert is_error
    assert "no such context" in text


def _run(session: Session, body: Callable[[Session], Awaitable[None]]) -> None:
    async def main() -> None:
        async with session.open():
            await body(session)

    asyncio.run(main())


@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.parametrize("kind", ["sdk-legacy", "sdk-auto", "fastmcp"])
def test_a_real_client_uses_every_tool_and_reads_a_resource(
    server_pool: ServerPool, backend: str, kind: str
) -> None:
    server = server_pool.granian(backend)
    _run(Session(kind, f"{server.base_url}/mcp"), scenario)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_default_sdk_client_talks_2026_07_28_and_legacy_keeps_a_session(
    server_pool: ServerPool, backend: str
) -> None:
    url = f"{server_pool.granian(backend).base_url}/mcp"

    async def main() -> None:
        async with SdkClient(url) as modern:
            assert modern.session.discover_result is not None
            assert modern.session.initialize_result is None
        async with SdkClient(url, mode="legacy") as legacy:
            assert legacy.session.initialize_result is not None
            assert legacy.session.initialize_result.protocol_version == "2025-11-25"
            assert legacy.session.initialize_result.server_info.name == "fastctx"

    asyncio.run(main())
