"""MCP over Streamable HTTP at /mcp: both protocol eras, the fastctx tools and ctx:// resources."""

from fastctx.mcp.endpoint import McpEndpoint

__all__ = ["McpEndpoint"]
