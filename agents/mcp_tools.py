"""Tools on a tenant's own MCP server (the `mcp` tool kind), reached over streamable HTTP with
the `mcp` package's client.

Every request of a session goes through agentplatform.infra.outbound's pinned client: the
server's name is resolved and checked once per session, each request connects to that
address, and nothing else (another host, a redirect elsewhere) is reached. The SDK is async
(anyio); the engine calls tools from a synchronous thread, so each session runs in an event
loop of its own, bounded as a whole by the tool's timeout.

Failures are `McpUnavailable`, whose message is safe to show the tenant (it names no address
the platform resolved); a call turns them, and the server's `isError` results, into an error
result for the LLM.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, PaginatedRequestParams, RequestParamsMeta, TextContent

from agentplatform.infra import outbound

# A call's result the LLM reads; a server's whole answer (JSON-RPC, SSE framing) may be larger.
MAX_RESULT_BYTES = 262_144
MAX_RESPONSE_BYTES = 1_048_576
MAX_LIST_PAGES = 20
# Where a call's idempotency key travels: the request's `_meta` (the protocol's place for
# extra data; a server that does not know the key ignores it). Not an HTTP header: the
# session's other requests (initialize, notifications) would carry it too.
IDEMPOTENCY_META = "agentplatform/idempotency_key"

T = TypeVar("T")


class McpUnavailable(Exception):
    """The server could not be reached, refused, timed out or broke the protocol. The
    message is safe to show the tenant."""


@dataclass(frozen=True)
class RemoteTool:
    name: str
    description: str
    parameters: dict[str, Any]  # the tool's inputSchema


@dataclass(frozen=True)
class Server:
    url: str
    headers: dict[str, str]  # sent on every request (the tenant's secrets, resolved)
    timeout: float  # seconds, the whole session


def remote_tool(server: Server, name: str) -> RemoteTool | None:
    """The server's tool called `name` (None when it lists none by that name).
    Raises McpUnavailable."""

    async def find(session: ClientSession) -> RemoteTool | None:
        return next((tool for tool in await _list(session) if tool.name == name), None)

    return _run(server, find)


def mcp_call(server: Server, name: str, arguments: dict[str, Any], idempotency_key: str) -> Any:
    """Call the server's tool `name`: its result as JSON, or `{"error": ...}` (never raises)."""

    async def call(session: ClientSession) -> CallToolResult:
        # An open map in the protocol; the TypedDict's extra keys are beyond mypy here.
        meta = {IDEMPOTENCY_META: idempotency_key} if idempotency_key else None
        return await session.call_tool(name, arguments, meta=cast(RequestParamsMeta | None, meta))

    try:
        result = _run(server, call)
    except McpUnavailable as error:
        return {"error": str(error)}
    return _bounded(_result(result))


# --- sessions -----------------------------------------------------------------------------


def _run(server: Server, work: Callable[[ClientSession], Awaitable[T]]) -> T:
    """Open a session, do `work` in it, close it: all within the server's timeout."""

    async def bounded() -> T:
        with anyio.fail_after(server.timeout):
            async with _session(server) as session:
                return await work(session)

    try:
        return _in_own_loop(lambda: anyio.run(bounded))
    except TimeoutError:
        raise McpUnavailable(
            f"The MCP server did not answer within {server.timeout:g} seconds."
        ) from None
    except Exception as error:  # every failure becomes words the tenant may read
        raise McpUnavailable(_reason(error, server.url)) from None


@asynccontextmanager
async def _session(server: Server) -> AsyncIterator[ClientSession]:
    client = outbound.pinned_async_client(
        server.url, timeout=server.timeout, headers=server.headers, max_bytes=MAX_RESPONSE_BYTES
    )
    async with (
        client,
        streamable_http_client(server.url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _in_own_loop(run: Callable[[], T]) -> T:
    # anyio.run needs a thread without a running event loop; the engine's threads have none,
    # but a caller inside one (an async test, a consumer) gets a thread of its own.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


async def _list(session: ClientSession) -> list[RemoteTool]:
    tools: list[RemoteTool] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools += [RemoteTool(t.name, t.description or "", dict(t.input_schema)) for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _reason(error: BaseException, url: str) -> str:
    """What went wrong, in words safe to show: the platform's own refusals as they are, the
    server's protocol errors by their message, anything else by its kind only (the text
    of a network error may name the address)."""
    for found in _leaves(error):
        if isinstance(found, outbound.OutboundError | McpUnavailable):
            return str(found)
    for found in _leaves(error):
        if isinstance(found, MCPError):
            return f"The MCP server answered an error: {found.message}"
    kind = type(next(iter(_leaves(error)), error)).__name__
    return f"The MCP exchange with {outbound.url_host(url)} failed ({kind})."


def _leaves(error: BaseException) -> list[BaseException]:
    # anyio's task groups wrap failures in exception groups, sometimes nested.
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


# --- results ------------------------------------------------------------------------------


def _result(result: CallToolResult) -> Any:
    """A tool's answer as JSON: its structured content, else its text (parsed when it is
    JSON, as an http tool's body is), else its content blocks."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    if result.is_error:
        return {"error": "\n".join(texts) or "The MCP tool reported an error."}
    if result.structured_content is not None:
        return result.structured_content
    if len(texts) == len(result.content):
        text = "\n".join(texts)
        try:
            return json.loads(text)
        except ValueError:
            return {"text": text}
    return [
        block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
    ]


def _bounded(result: Any) -> Any:
    if len(json.dumps(result, default=str)) > MAX_RESULT_BYTES:
        return {"error": f"The MCP tool's result is larger than {MAX_RESULT_BYTES} bytes."}
    return result
