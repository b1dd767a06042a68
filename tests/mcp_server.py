"""A real MCP server on loopback for tests: the `mcp` package's MCPServer over streamable
HTTP, served by uvicorn in a background thread, recording the headers of every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from agentplatform.devtools.testing import free_port


def _server() -> MCPServer:
    server = MCPServer("tenant-tools")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Always fails.")
    def fail() -> str:
        raise ToolError("the warehouse is closed")  # its text reaches the client

    @server.tool(description="The _meta the call came with.")
    def meta(ctx: Context) -> dict[str, Any]:
        sent = ctx.request_context.meta
        return dict(sent or {})

    @server.tool(description="Answers after a while.")
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "late"

    return server


class _Recorder:
    """Keeps the headers of every HTTP request (lower-case names) before the app sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope["headers"]
            self.headers.append({k.decode().lower(): v.decode() for k, v in raw})
        await self.app(scope, receive, send)


class McpServer:
    def __init__(self, port: int) -> None:
        # Tests reach it by made-up names too: the platform's own rules guard the address.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        app = _server().streamable_http_app(transport_security=security, json_response=True)
        self.recorder = _Recorder(app)
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        config = uvicorn.Config(self.recorder, host="127.0.0.1", port=port, log_level="error")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def mcp_server() -> Iterator[McpServer]:
    server = McpServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
