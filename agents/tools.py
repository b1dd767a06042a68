"""Tools an agent's LLM may call during a turn.

A deployment registers tools as `Tool` objects named by dotted path in AGENTS["TOOLS"]; an
agent may call the ones listed in its `tools` field. The turn engine runs the calls the LLM
asks for, hands each an idempotency key that stays the same when the turn is resumed or
retried (so a tool with external effects can deduplicate), stores call and result as
messages, and calls the LLM again with the results.

Two tools are built in and handled by the engine itself, needing no answer from the LLM:
`update_task_state` (merge its arguments into the session's task state) and
`request_checkpoint` (ask for a checkpoint under the `transitions` policy).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
from django.utils.module_loading import import_string

from agents.conf import agents_settings

TASK_STATE_TOOL = "update_task_state"
CHECKPOINT_TOOL = "request_checkpoint"
BUILT_IN = frozenset({TASK_STATE_TOOL, CHECKPOINT_TOOL})

_BUILT_IN_SPECS: tuple[dict[str, Any], ...] = (
    {
        "name": TASK_STATE_TOOL,
        "description": "Merge these keys into the task state (use `step` for the current step).",
        "parameters": {"type": "object", "additionalProperties": True},
    },
    {
        "name": CHECKPOINT_TOOL,
        "description": "Save a checkpoint of the conversation here.",
        "parameters": {"type": "object", "properties": {}},
    },
)


@dataclass(frozen=True)
class ToolContext:
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    user_id: str
    idempotency_key: str  # the same for this call when its turn is resumed or retried
    call_id: str = ""  # the LLM's id of the call


class Approval:
    """Who must approve a call of a tool before it runs (NONE: it runs at once)."""

    NONE = ""
    API = "api"  # the tenant's program: POST /runs/{id}/actions/
    OPERATOR = "operator"  # a manager in the console's pending-approvals page
    END_USER = "end_user"  # the end user, on the chat page
    CHOICES = ((NONE, "none"), (API, "api"), (OPERATOR, "operator"), (END_USER, "end_user"))


class ToolKind:
    PYTHON = "python"  # registered by the deployment (AGENTS["TOOLS"])
    HTTP = "http"  # the tenant's URL, called by the platform
    CLIENT = "client"  # run by the caller, who sends the output (POST /runs/{id}/actions/)
    MCP = "mcp"  # a tool of the tenant's MCP server


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    # Returns a JSON-serialisable result; None for a client tool (the caller runs it).
    run: Callable[[dict[str, Any], ToolContext], Any] | None = None
    kind: str = ToolKind.PYTHON
    approval: str = Approval.NONE

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    @property
    def needs_action(self) -> bool:
        """The run stops for someone before this tool's call has a result."""
        return self.approval != Approval.NONE or self.kind == ToolKind.CLIENT


@functools.cache
def _load(paths: tuple[str, ...]) -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    for path in paths:
        tool = import_string(path)
        if not isinstance(tool, Tool):
            raise TypeError(f'AGENTS["TOOLS"]: {path} is not a Tool')
        tools[tool.name] = tool
    return tools


def tool_registry() -> dict[str, Tool]:
    """Every registered tool by name."""
    return _load(tuple(agents_settings().TOOLS))


def tools_for(names: list[str]) -> dict[str, Tool]:
    """The registered tools among `names` (an agent's `tools`); unknown names are skipped."""
    registry = tool_registry()
    return {name: registry[name] for name in names if name in registry}


def tool_specs(tools: dict[str, Tool]) -> tuple[dict[str, Any], ...]:
    """What the LLM is told it may call: the built-ins and these tools (an agent's)."""
    return _BUILT_IN_SPECS + tuple(tool.spec() for tool in tools.values())


def arguments_problem(tool: Tool, arguments: dict[str, Any]) -> str | None:
    """Why a call's arguments do not fit the tool's JSON Schema (None when they do). The
    LLM gets this back as the call's error result, to correct itself."""
    error = jsonschema.exceptions.best_match(
        _validator(_schema_key(tool.parameters)).iter_errors(arguments)
    )
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{where or 'arguments'}: {error.message}"


def _schema_key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)


@functools.lru_cache(maxsize=1024)
def _validator(schema: str) -> jsonschema.protocols.Validator:
    loaded = json.loads(schema)
    return jsonschema.validators.validator_for(loaded, default=jsonschema.Draft202012Validator)(
        loaded
    )
