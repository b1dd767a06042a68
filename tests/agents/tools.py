"""Tools registered by the tests (AGENTS["TOOLS"]): each records its calls, so a test can
tell whether a resumed turn ran a side effect twice."""

from __future__ import annotations

from typing import Any

from agents.tools import Tool, ToolContext

CALLS: list[tuple[str, dict[str, Any], str]] = []  # (tool, arguments, idempotency key)


def _lookup(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    CALLS.append(("lookup_order", arguments, context.idempotency_key))
    return {"order": arguments.get("number"), "status": "shipped"}


def _send_email(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    CALLS.append(("send_email", arguments, context.idempotency_key))
    return {"sent": True, "to": arguments.get("to")}


def _broken(arguments: dict[str, Any], context: ToolContext) -> Any:
    raise RuntimeError("the mail server is down")


lookup_order = Tool("lookup_order", "Find an order.", {"type": "object"}, _lookup)
send_email = Tool("send_email", "Send an e-mail.", {"type": "object"}, _send_email)
broken = Tool("broken", "Always fails.", {"type": "object"}, _broken)

PATHS = (
    "tests.agents.tools.lookup_order",
    "tests.agents.tools.send_email",
    "tests.agents.tools.broken",
)
