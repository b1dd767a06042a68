"""Tenants' own tools, defined through the API (`/api/v1/tools/`), beside the tools the
deployment registers (agents.tools). An agent lists both kinds by name in its `tools`.

- `http`: the platform POSTs the call to the tenant's URL through agentplatform.infra.outbound
  (no internal addresses, no DNS rebinding), signed the Standard Webhooks way with the tool's
  own `whsec_` secret (shown once), with the call's idempotency key (the same when a run is
  resumed, so the tenant's server can drop a repeat), a timeout, a bounded response, and
  retries only on timeouts, 5xx and 429 (Retry-After honoured, bounded). The response body
  becomes the call's result; any failure becomes an error result the LLM reads.
- `client`: the run stops in `requires_action` until the caller sends the output.
- `mcp`: a tool of the tenant's MCP server (streamable HTTP, agents.mcp_tools), called by
  its `remote_name` in a session whose every request goes to the address checked for it.
  When the tool is saved the server's tools are listed: the tool must be among them, and its
  description and JSON Schema fill the ones the tenant left empty (saved on the row, the
  listing's cache; `tool_refresh` takes the server's again). A failure or an `isError`
  answer becomes an error result.

Arguments are checked against the tool's JSON Schema when it is saved (the schema itself)
and on every call (agents.tools.arguments_problem). Header values come from the tenant's
encrypted secrets, named here: no secret is ever stored in the tool, returned by the API,
written to the audit trail, or shown to the LLM.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
from django.db import transaction
from django.utils import timezone

from agentplatform.core.audit import Actor, audit_delete, audit_row, audited, unaudited
from agentplatform.core.vault import SecretUnavailable, cipher, secret_value
from agentplatform.core.webhook_delivery import sign
from agentplatform.core.webhooks import signing_secret_new
from agentplatform.infra import outbound
from agentplatform.models import Tenant, TenantSecret
from agents import mcp_tools
from agents.models import TOOL_NAME_PATTERN, Agent, TenantTool
from agents.tools import BUILT_IN, Tool, ToolContext, tool_registry, tools_for

MAX_RESULT_BYTES = 262_144
HTTP_ATTEMPTS = 3
RETRY_WAIT_CAP_SECONDS = 10.0
EDITABLE = (
    "description", "parameters", "approval", "timeout_seconds", "url", "headers", "remote_name",
)  # fmt: skip
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,100}$")
# Headers the platform sets itself on every call (an http tool's, the MCP protocol's); a
# tenant's secret cannot replace them.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "idempotency-key", "webhook-id",
     "webhook-timestamp", "webhook-signature", "accept", "accept-encoding", "mcp-session-id",
     "mcp-protocol-version", "last-event-id"}
)  # fmt: skip


class ToolInvalid(Exception):
    """A tool definition that cannot be saved (422), keyed by its field."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


@dataclass(frozen=True)
class ToolSpec:
    """What a tenant sends to define a tool."""

    name: str
    kind: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    approval: str = ""
    timeout_seconds: int = 30
    url: str = ""
    headers: dict[str, str] | None = None
    remote_name: str = ""


@audited("tool.created")
def tool_create(*, tenant: Tenant, spec: ToolSpec, actor: Actor) -> tuple[TenantTool, str | None]:
    """A new tool; an `http` tool's signing secret is returned this once. An `mcp` tool's
    server is listed first (outside the transaction: a network call of up to its timeout)."""
    _check_name(spec.name)
    is_mcp = spec.kind == TenantTool.Kind.MCP
    tool = TenantTool(
        tenant=tenant,
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        # An mcp tool's empty schema is filled from its server's listing.
        parameters=spec.parameters or ({} if is_mcp else {"type": "object"}),
        approval=spec.approval,
        timeout_seconds=spec.timeout_seconds,
        url=spec.url,
        headers=spec.headers or {},
        remote_name=spec.remote_name,
    )
    _check(tool)
    secret = None
    if tool.kind == TenantTool.Kind.HTTP:
        secret, tool.secret_ciphertext = signing_secret_new()
    with transaction.atomic():
        tool.full_clean(validate_constraints=False)  # a taken name is the database's 409
        tool.save()
        _audit(tool, "tool.created", actor)
    return tool, secret


@audited("tool.updated")
def tool_update(*, tool: TenantTool, actor: Actor, **changes: Any) -> TenantTool:
    """Change a tool; an `mcp` tool's server is listed again (outside the transaction)."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    for field, value in changes.items():
        setattr(tool, field, value)
    _check(tool)
    with transaction.atomic():
        tool.full_clean(validate_constraints=False)  # a taken name is the database's 409
        tool.save()
        _audit(tool, "tool.updated", actor, fields=sorted(changes))
    return tool


@unaudited("audited by tool_update, which it calls (tool.updated)")
def tool_refresh(*, tool: TenantTool, actor: Actor) -> TenantTool:
    """An `mcp` tool's description and schema taken again from its server's listing (the
    saved ones are dropped: they may be the tenant's own)."""
    if tool.kind != TenantTool.Kind.MCP:
        raise ToolInvalid("kind", "Only an mcp tool is described by its server.")
    return tool_update(tool=tool, actor=actor, description="", parameters={})


@audited("tool.deleted")
def tool_delete(*, tool: TenantTool, actor: Actor) -> None:
    audit_delete(tool, actor=actor, action="tool.deleted", payload=_audit_payload(tool))


def tool_list(*, tenant: Tenant) -> Any:
    return TenantTool.objects.filter(tenant=tenant).order_by("-created_at")


def tool_names_unknown(*, tenant_id: uuid.UUID | str, names: list[str]) -> list[str]:
    """The names among `names` that are neither registered nor the tenant's own tools."""
    registry = tool_registry()
    missing = [name for name in names if name not in registry]
    if not missing:
        return []
    own = set(
        TenantTool.objects.filter(tenant_id=tenant_id, name__in=missing).values_list(
            "name", flat=True
        )
    )
    return [name for name in missing if name not in own]


def agent_tools(agent: Agent) -> dict[str, Tool]:
    """Every tool the agent may call: the registered ones it lists, and the tenant's own
    (one query, only when it lists names the registry does not know)."""
    tools = tools_for(agent.tools)
    missing = [name for name in agent.tools if name not in tools]
    if missing:
        for row in TenantTool.objects.filter(tenant_id=agent.tenant_id, name__in=missing):
            tools[row.name] = _as_tool(row)
    return tools


# --- checks -------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not re.match(TOOL_NAME_PATTERN, name):
        raise ToolInvalid("name", "Use 1-64 letters, digits, '_' or '-'.")
    if name in BUILT_IN or name in tool_registry():
        raise ToolInvalid("name", f"{name!r} is the name of a platform tool.")


def _check(tool: TenantTool) -> None:
    problem = schema_problem(tool.parameters)
    if problem:
        raise ToolInvalid("parameters", problem)
    if tool.remote_name and tool.kind != TenantTool.Kind.MCP:
        raise ToolInvalid("remote_name", "Only an mcp tool has a remote name.")
    if tool.kind == TenantTool.Kind.CLIENT:
        if tool.url or tool.headers:
            raise ToolInvalid("url", "A client tool is run by the caller: it has no URL.")
        return
    if not tool.url:
        raise ToolInvalid("url", f"An {tool.kind} tool needs the URL the platform calls.")
    try:
        tool.url = outbound.url_check(tool.url)
    except outbound.OutboundRefused as error:
        raise ToolInvalid("url", str(error)) from None
    _check_headers(tool)
    if tool.kind == TenantTool.Kind.MCP:
        _check_remote(tool)


def _check_remote(tool: TenantTool) -> None:
    """The MCP server must list the tool; its description and schema fill empty ones."""
    tool.remote_name = tool.remote_name or tool.name
    try:
        remote = mcp_tools.remote_tool(_server(tool), tool.remote_name)
    except mcp_tools.McpUnavailable as error:
        raise ToolInvalid("url", f"The MCP server's tools could not be listed: {error}") from None
    except SecretUnavailable as error:
        raise ToolInvalid("headers", str(error)) from None
    if remote is None:
        raise ToolInvalid("remote_name", f"The MCP server has no tool {tool.remote_name!r}.")
    if not tool.parameters:
        problem = schema_problem(remote.parameters)
        if problem:
            raise ToolInvalid("parameters", f"The MCP server's schema is not usable: {problem}")
        tool.parameters = remote.parameters
    if not tool.description:
        tool.description = remote.description[:2000]


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a usable JSON Schema for a tool's arguments (None when it is)."""
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return "A tool's parameters are a JSON Schema of an object ({'type': 'object', ...})."
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(
            schema
        ).check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.absolute_path)
        return f"Not a valid JSON Schema{f' at {where}' if where else ''}: {error.message}"
    return None


def _check_headers(tool: TenantTool) -> None:
    headers = tool.headers
    if not isinstance(headers, dict):
        raise ToolInvalid("headers", "An object: header name -> the name of a tenant secret.")
    names = set(
        TenantSecret.objects.filter(tenant_id=tool.tenant_id).values_list("name", flat=True)
    )
    for header, secret_name in headers.items():
        if not _HEADER_NAME.match(header) or header.lower() in _RESERVED_HEADERS:
            raise ToolInvalid("headers", f"{header!r} cannot be set.")
        if secret_name not in names:
            raise ToolInvalid("headers", f"No secret named {secret_name!r} (POST /secrets/).")


def _audit_payload(tool: TenantTool, **extra: Any) -> dict[str, Any]:
    # The URL's host only: a path or query may hold a token.
    host = outbound.url_host(tool.url) if tool.url else None
    return {"name": tool.name, "kind": tool.kind, "approval": tool.approval, "host": host, **extra}


def _audit(tool: TenantTool, action: str, actor: Actor, **extra: Any) -> None:
    audit_row(tool, actor=actor, action=action, payload=_audit_payload(tool, **extra))


# --- calls --------------------------------------------------------------------------------


def _as_tool(row: TenantTool) -> Tool:
    calls: dict[str, Callable[[TenantTool, dict[str, Any], ToolContext], Any]] = {
        TenantTool.Kind.HTTP: _http_call,
        TenantTool.Kind.MCP: _mcp_call,
    }
    call = calls.get(row.kind)  # none for a client tool: the caller runs it
    run = functools.partial(call, row) if call is not None else None
    return Tool(
        row.name,
        row.description,
        row.parameters or {"type": "object"},
        run,
        kind=row.kind,
        approval=row.approval,
    )


def _http_call(tool: TenantTool, arguments: dict[str, Any], context: ToolContext) -> Any:
    """POST the call to the tenant's URL; its answer, or an error result."""
    body = json.dumps(
        {
            "tool": tool.name,
            "tool_call_id": context.call_id,
            "arguments": arguments,
            "session": str(context.session_id),
            "idempotency_key": context.idempotency_key,
        },
        separators=(",", ":"),
    )
    # One message id per call, the same on every attempt and every resumption.
    msg_id = "call_" + hashlib.sha256(context.idempotency_key.encode()).hexdigest()[:32]
    try:
        fixed = {"Content-Type": "application/json", "Idempotency-Key": context.idempotency_key}
        fixed |= _secret_headers(tool)
        secret = cipher().decrypt(tool.secret_ciphertext.encode()).decode()
    except (SecretUnavailable, ValueError) as error:
        return {"error": f"The tool cannot be called: {error}"}
    failure = ""
    for attempt in range(HTTP_ATTEMPTS):
        now = timezone.now()
        headers = fixed | {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(secrets=[secret], msg_id=msg_id, timestamp=now, body=body),
        }
        try:
            response = outbound.request(
                "POST",
                tool.url,
                content=body.encode(),
                headers=headers,
                timeout=float(tool.timeout_seconds),
                max_bytes=MAX_RESULT_BYTES,
                follow_redirects=3,
            )
        except outbound.OutboundRefused as error:
            return {"error": f"The tool's URL is refused: {error}"}
        except outbound.OutboundFailed as error:
            if error.status is not None:  # an answer arrived, over the size limit: final
                return {"error": str(error)}
            failure, wait = str(error), 2.0**attempt
        else:
            if 200 <= response.status < 300:
                return _result(response.body)
            if response.status != 429 and response.status < 500:
                return {"error": f"The tool's server answered {response.status}.",
                        "body": _snippet(response.body)}  # fmt: skip
            failure = f"The tool's server answered {response.status}."
            retry_after = outbound.retry_after_seconds(response.headers.get("retry-after"))
            wait = retry_after if retry_after is not None else 2.0**attempt
        if attempt + 1 < HTTP_ATTEMPTS:
            time.sleep(min(wait, RETRY_WAIT_CAP_SECONDS))
    return {"error": f"{failure} (after {HTTP_ATTEMPTS} attempts)"}


def _mcp_call(tool: TenantTool, arguments: dict[str, Any], context: ToolContext) -> Any:
    """Call the tool on the tenant's MCP server; its answer, or an error result."""
    try:
        server = _server(tool)
    except SecretUnavailable as error:
        return {"error": f"The tool cannot be called: {error}"}
    name = tool.remote_name or tool.name
    return mcp_tools.mcp_call(server, name, arguments, context.idempotency_key)


def _server(tool: TenantTool) -> mcp_tools.Server:
    return mcp_tools.Server(tool.url, _secret_headers(tool), float(tool.timeout_seconds))


def _secret_headers(tool: TenantTool) -> dict[str, str]:
    return {
        header: secret_value(tenant_id=tool.tenant_id, name=name)
        for header, name in (tool.headers or {}).items()
    }


def _result(body: bytes) -> Any:
    """The tool's answer as the call's result: its JSON, or its text."""
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text}


def _snippet(body: bytes) -> str:
    return body[:500].decode("utf-8", errors="replace")
