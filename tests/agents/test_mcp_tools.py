"""Tenants' tools on their own MCP servers (the `mcp` kind): a real MCP server (the `mcp`
package's MCPServer over streamable HTTP, run by uvicorn on loopback) is listed when a tool
is saved and called during turns, every request through the outbound rules."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from agentplatform.devtools.testing import free_port
from agentplatform.infra import outbound
from agents.llm.base import ToolCall
from agents.llm.scripted import ScriptedBackend, Step
from agents.mcp_tools import IDEMPOTENCY_META, Server, remote_tool
from agents.models import Message
from tests.agents.test_tenant_tools import _tool_results, _turn, _use
from tests.conftest import Persona
from tests.loopback import Reply, receiver
from tests.mcp_server import McpServer, mcp_server

pytestmark = pytest.mark.django_db

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture(scope="module")
def server() -> Iterator[McpServer]:
    with mcp_server() as running:
        yield running


def _create(persona: Persona, url: str, **body: Any) -> Any:
    tool = {"name": "add", "kind": "mcp", "url": url, **body}
    return persona.client().post("/api/v1/tools/", tool, format="json")


def _call(persona: Persona, llm: ScriptedBackend, name: str, arguments: dict[str, Any]) -> Any:
    _use(persona, name)
    llm.script(Step(reply="", tool_calls=[ToolCall("c1", name, arguments)]), Step(reply="ok"))
    assert _turn(persona).status_code == 201
    return _tool_results(persona)[-1]


def test_an_mcp_tool_takes_its_description_and_schema_from_the_server(
    alice: Persona, server: McpServer
) -> None:
    created = _create(alice, server.url)
    assert created.status_code == 201, created.content
    tool = created.json()
    assert tool["description"] == "Add two integers."
    assert tool["parameters"]["required"] == ["a", "b"]
    assert tool["parameters"]["properties"]["a"]["type"] == "integer"
    assert (tool["remote_name"], tool["secret"]) == ("add", None)


def test_the_tenants_own_name_description_and_schema_are_kept(
    alice: Persona, server: McpServer
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer", "maximum": 9}}}
    created = _create(
        alice, server.url, name="sum", remote_name="add", description="Sum.", parameters=schema
    )
    assert created.status_code == 201, created.content
    assert (created.json()["description"], created.json()["parameters"]) == ("Sum.", schema)


def test_a_tool_the_server_does_not_list_or_a_server_that_cannot_be_listed_is_a_422(
    alice: Persona, server: McpServer
) -> None:
    with receiver(lambda r: Reply(404, b"not here")) as not_mcp:
        cases = [
            ({"url": server.url, "remote_name": "nope"}, "remote_name", "has no tool 'nope'"),
            ({"url": f"http://127.0.0.1:{free_port()}/mcp"}, "url", "Could not connect"),
            ({"url": "http://10.1.2.3/mcp"}, "url", "not a public address"),
            ({"url": not_mcp.url + "/mcp"}, "url", "could not be listed"),
            ({"url": server.url, "headers": {"Accept": "missing"}}, "headers", "cannot be set"),
        ]
        for body, field, words in cases:
            response = _create(alice, **body)
            assert response.status_code == 422, (body, response.content)
            assert words in json.dumps(response.json()["errors"]), (body, response.json())
            assert field in json.dumps(response.json()["errors"]), (body, response.json())
    http = {"name": "x", "kind": "http", "url": server.url, "remote_name": "add"}
    response = alice.client().post("/api/v1/tools/", http, format="json")
    assert response.status_code == 422 and "remote_name" in response.content.decode()


def test_a_name_resolving_to_a_refused_address_is_a_422(
    alice: Persona, server: McpServer, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production's rules (no loopback exception): a name of the server's own address."""
    settings.OUTBOUND_ALLOWED_NETWORKS = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "tools.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return _real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)
    before = len(server.recorder.headers)
    response = _create(alice, f"http://tools.example:{server.port}/mcp")
    assert response.status_code == 422
    assert "resolves to an address that is not allowed" in json.dumps(response.json()["errors"])
    assert "127.0.0.1" not in response.content.decode()
    assert len(server.recorder.headers) == before  # nothing reached the server


def test_a_turn_calls_the_mcp_tool_and_gets_its_result(
    alice: Persona, llm: ScriptedBackend, server: McpServer
) -> None:
    assert _create(alice, server.url).status_code == 201
    assert _call(alice, llm, "add", {"a": 2, "b": 3}) == {"result": 5}
    assert [m.content for m in llm.calls[-1] if m.role == "tool"] == ['{"result": 5}']


def test_the_calls_idempotency_key_travels_in_its_meta(
    alice: Persona, llm: ScriptedBackend, server: McpServer
) -> None:
    assert _create(alice, server.url, name="meta").status_code == 201
    result = _call(alice, llm, "meta", {})
    row = Message.objects.get(session=alice.session, role="tool")
    assert result[IDEMPOTENCY_META] == row.metadata["idempotency_key"] != ""


def test_an_is_error_answer_becomes_an_error_result(
    alice: Persona, llm: ScriptedBackend, server: McpServer
) -> None:
    assert _create(alice, server.url, name="fail").status_code == 201
    assert _call(alice, llm, "fail", {}) == {
        "error": "Error executing tool fail: the warehouse is closed"  # the server's words
    }


def test_a_server_gone_or_slow_gives_an_error_result_not_a_failed_turn(
    alice: Persona, llm: ScriptedBackend, server: McpServer
) -> None:
    with mcp_server() as short_lived:
        assert _create(alice, short_lived.url).status_code == 201
    assert "Could not connect" in _call(alice, llm, "add", {"a": 1, "b": 1})["error"]

    assert _create(alice, server.url, name="slow", timeout_seconds=1).status_code == 201
    result = _call(alice, llm, "slow", {"seconds": 2})
    assert result == {"error": "The MCP server did not answer within 1 seconds."}


def test_secret_headers_reach_the_server_and_are_never_shown(
    alice: Persona, llm: ScriptedBackend, server: McpServer
) -> None:
    alice.client().post("/api/v1/secrets/", {"name": "erp", "value": "s3cr3t"}, format="json")
    before = len(server.recorder.headers)
    created = _create(alice, server.url, headers={"X-Api-Key": "erp"})
    assert created.status_code == 201 and "s3cr3t" not in created.content.decode()
    assert _call(alice, llm, "add", {"a": 1, "b": 2}) == {"result": 3}
    sent = server.recorder.headers[before:]
    assert sent and all(h.get("x-api-key") == "s3cr3t" for h in sent)
    assert "s3cr3t" not in alice.client().get("/api/v1/tools/").content.decode()


def test_a_call_waits_for_approval_like_any_tool(
    alice: Persona, llm: ScriptedBackend, server: McpServer
) -> None:
    assert _create(alice, server.url, approval="api").status_code == 201
    _use(alice, "add")
    llm.script(Step(reply="", tool_calls=[ToolCall("c1", "add", {"a": 1, "b": 2})]))
    before = len(server.recorder.headers)
    run = (
        alice.client()
        .post(f"/api/v1/sessions/{alice.session.pk}/runs/", {"content": "add"}, format="json")
        .json()
    )
    assert run["status"] == "requires_action"
    assert run["required_action"]["tool_calls"][0]["kind"] == "mcp"
    assert len(server.recorder.headers) == before  # not called before someone approves


def test_refresh_takes_the_servers_description_again(
    alice: Persona, bob: Persona, server: McpServer
) -> None:
    tool = _create(alice, server.url, description="Mine.").json()
    assert tool["description"] == "Mine."
    refreshed = alice.client().post(f"/api/v1/tools/{tool['id']}/refresh/")
    assert refreshed.status_code == 200, refreshed.content
    assert refreshed.json()["description"] == "Add two integers."
    assert bob.client().post(f"/api/v1/tools/{tool['id']}/refresh/").status_code == 404
    client_tool = {"name": "clip", "kind": "client"}
    other = alice.client().post("/api/v1/tools/", client_tool, format="json").json()
    assert alice.client().post(f"/api/v1/tools/{other['id']}/refresh/").status_code == 422


def test_a_caller_inside_an_event_loop_gets_a_thread_of_its_own(server: McpServer) -> None:
    async def inside_a_loop() -> Any:
        return remote_tool(Server(server.url, {}, 5.0), "add")

    found = asyncio.run(inside_a_loop())
    assert found is not None and found.description == "Add two integers."
