"""Tools registered by the tests (AGENTS["TOOLS"]): each records its calls, so a test can
tell whether a resumed turn ran a side effect twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

from agentplatform.infra.redis import get_redis
from agents.tools import Approval, Tool, ToolContext, ToolKind

CALLS: list[tuple[str, dict[str, Any], str]] = []  # (tool, arguments, idempotency key)


def calls_key() -> str:
    """Where tools record their calls for tests that run them in other processes."""
    return f"{settings.REDIS_KEY_PREFIX}:test:tool-calls"


def _record(name: str, arguments: dict[str, Any], key: str) -> None:
    CALLS.append((name, arguments, key))
    get_redis().rpush(calls_key(), json.dumps([name, key]))


def calls_clear() -> None:
    CALLS.clear()
    get_redis().delete(calls_key(), f"{calls_key()}:effects")


def recorded_calls() -> list[tuple[str, str]]:
    """(tool, idempotency key) of every call, from every process."""
    return [tuple(json.loads(item)) for item in get_redis().lrange(calls_key(), 0, -1)]  # type: ignore[misc, union-attr]


def _lookup(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    _record("lookup_order", arguments, context.idempotency_key)
    return {"order": arguments.get("number"), "status": "shipped"}


def _send_email(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    _record("send_email", arguments, context.idempotency_key)
    return {"sent": True, "to": arguments.get("to")}


def _broken(arguments: dict[str, Any], context: ToolContext) -> Any:
    raise RuntimeError("the mail server is down")


lookup_order = Tool("lookup_order", "Find an order.", {"type": "object"}, _lookup)
send_email = Tool("send_email", "Send an e-mail.", {"type": "object"}, _send_email)
broken = Tool("broken", "Always fails.", {"type": "object"}, _broken)


def _effect(name: str) -> Callable[[dict[str, Any], ToolContext], dict[str, Any]]:
    def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        _record(name, arguments, context.idempotency_key)
        return {"done": name, "amount": arguments.get("amount")}

    return run


# Irreversible: each call waits for a decision (the tenant's program, an operator, the user).
refund = Tool(
    "refund", "Refund an order.", {"type": "object"}, _effect("refund"), approval=Approval.API
)
wire = Tool("wire", "Wire money.", {"type": "object"}, _effect("wire"), approval=Approval.OPERATOR)
close_account = Tool(
    "close_account",
    "Close the account.",
    {"type": "object"},
    _effect("close_account"),
    approval=Approval.END_USER,
)


def _slow_effect(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """A slow tool with an external effect, deduplicated by its idempotency key (as a
    tenant's own system would): killed mid-call and called again, its effect happens once."""
    _record("slow_effect", arguments, context.idempotency_key)
    time.sleep(float(arguments.get("seconds", 3)))
    effects = f"{calls_key()}:effects"
    get_redis().sadd(effects, context.idempotency_key)
    return {"done": True}


slow_effect = Tool("slow_effect", "Takes a while.", {"type": "object"}, _slow_effect)
# Run by the caller, who sends the output.
pick_file = Tool("pick_file", "Let the user pick a file.", {"type": "object"}, kind=ToolKind.CLIENT)

PATHS = (
    "tests.agents.tools.lookup_order",
    "tests.agents.tools.send_email",
    "tests.agents.tools.broken",
    "tests.agents.tools.refund",
    "tests.agents.tools.wire",
    "tests.agents.tools.close_account",
    "tests.agents.tools.pick_file",
    "tests.agents.tools.slow_effect",
)
