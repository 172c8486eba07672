"""fastctx as the shared state of other MCP servers: FastMCP's key-value store and the SDK's
event store, each behind an extra of its own (`fastctx[fastmcp]`, `fastctx[mcp]`)."""
