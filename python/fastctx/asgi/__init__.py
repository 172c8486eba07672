"""The ASGI layer both interfaces (REST and MCP) stand on: exchanges, bodies, problems, guards."""
