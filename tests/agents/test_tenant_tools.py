"""Tenants' own tools (issue: long-running agents, item 3): defined through /api/v1/tools/,
called over HTTP (signed, idempotent, retried only when it may help) or by the client, their
arguments checked against their JSON Schema on every call."""

from __future__ import annotations

import json
from typing import Any

import pytest
from standardwebhooks import Webhook

from agents.llm.base import ToolCall
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Agent, Message, Session
from tests.conftest import Persona
from tests.loopback import Received, Reply, receiver

pytestmark = pytest.mark.django_db

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "integer"}},
    "required": ["order"],
    "additionalProperties": False,
}


def _create(persona: Persona, **body: Any) -> Any:
    tool = {"name": "order_status", "kind": "http", "parameters": ORDER_SCHEMA, **body}
    return persona.client().post("/api/v1/tools/", tool, format="json")


def _use(persona: Persona, *names: str) -> None:
    response = persona.client().patch(
        f"/api/v1/agents/{persona.agent.pk}/", {"tools": list(names)}, format="json"
    )
    assert response.status_code == 200, response.content
    persona.session = Session.objects.select_related("agent").get(pk=persona.session.pk)


def _turn(persona: Persona, content: str = "where is order 7?") -> Any:
    return persona.client().post(
        f"/api/v1/sessions/{persona.session.pk}/messages/", {"content": content}, format="json"
    )


def _tool_results(persona: Persona) -> list[Any]:
    rows = Message.objects.filter(session=persona.session, role="tool").order_by("seq")
    return [json.loads(row.content) for row in rows]


def test_a_tool_is_defined_listed_changed_and_deleted(alice: Persona) -> None:
    with receiver() as server:
        created = _create(alice, url=server.url + "/tools/order", description="Order status.")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_")
    listed = alice.client().get("/api/v1/tools/").json()["results"]
    assert [t["name"] for t in listed] == ["order_status"] and "secret" not in listed[0]
    tool_id = body["id"]
    changed = alice.client().patch(
        f"/api/v1/tools/{tool_id}/", {"description": "Where an order is."}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["description"] == "Where an order is."
    renamed = alice.client().patch(f"/api/v1/tools/{tool_id}/", {"name": "x"}, format="json")
    assert renamed.status_code in (400, 422)  # the name is fixed: agents refer to it
    assert alice.client().delete(f"/api/v1/tools/{tool_id}/").status_code == 204


def test_bad_definitions_are_refused_with_the_field_named(alice: Persona) -> None:
    cases = [
        ({"parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}, "parameters"),
        ({"parameters": {"type": "string"}}, "parameters"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http://10.1.2.3/x"}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": ""}, "url"),
        ({"kind": "client", "url": "https://example.com/x"}, "url"),
        ({"name": "update_task_state", "url": "https://example.com/x"}, "name"),
        ({"name": "has space", "url": "https://example.com/x"}, "name"),
        ({"url": "https://example.com/x", "headers": {"X-Token": "missing"}}, "headers"),
        ({"url": "https://example.com/x", "headers": {"Host": "missing"}}, "headers"),
        ({"url": "https://example.com/x", "timeout_seconds": 0}, "timeout_seconds"),
        ({"url": "https://example.com/x", "approval": "boss"}, "approval"),
    ]
    for body, field in cases:
        response = _create(alice, **body)
        assert response.status_code == 422, (body, response.content)
        assert field in json.dumps(response.json()["errors"]), (body, response.json())
    assert _create(alice, url="https://example.com/x").status_code == 201
    assert _create(alice, url="https://example.com/y").status_code == 409  # the name is taken


def test_agents_may_list_only_tools_that_exist_for_their_tenant(
    alice: Persona, bob: Persona
) -> None:
    assert _create(bob, url="https://example.com/bob").status_code == 201
    response = alice.client().patch(
        f"/api/v1/agents/{alice.agent.pk}/", {"tools": ["order_status"]}, format="json"
    )
    assert response.status_code == 422  # bob's tool is no name alice can use
    assert "order_status" in json.dumps(response.json())


def test_an_http_tool_call_is_signed_idempotent_and_its_answer_is_the_result(
    alice: Persona, llm: ScriptedBackend
) -> None:
    answer = {"order": 7, "status": "shipped"}
    with receiver(lambda r: Reply(200, json.dumps(answer).encode())) as server:
        secret = _create(alice, url=server.url + "/orders").json()["secret"]
        _use(alice, "order_status")
        call = ToolCall(id="c1", name="order_status", arguments={"order": 7})
        llm.script(Step(reply="", tool_calls=[call]), Step(reply="It shipped."))
        assert _turn(alice).status_code == 201
    (request,) = server.received
    assert request.path == "/orders"
    payload = Webhook(secret).verify(request.body, request.headers)  # raises if forged
    assert payload["arguments"] == {"order": 7} and payload["tool_call_id"] == "c1"
    assert request.headers["idempotency-key"] == payload["idempotency_key"]
    assert _tool_results(alice) == [answer]
    # What the LLM saw of the tool: its spec (never the secret or the URL).
    spec_names = [m.content for m in llm.calls[-1] if m.role == "tool"]
    assert spec_names == [json.dumps(answer)]


def test_arguments_that_do_not_fit_the_schema_go_back_to_the_llm(
    alice: Persona, llm: ScriptedBackend
) -> None:
    with receiver() as server:
        _create(alice, url=server.url)
        _use(alice, "order_status")
        bad = ToolCall(id="c1", name="order_status", arguments={"order": "seven"})
        good = ToolCall(id="c2", name="order_status", arguments={"order": 7})
        llm.script(
            Step(reply="", tool_calls=[bad]), Step(reply="", tool_calls=[good]), Step(reply="ok")
        )
        assert _turn(alice).status_code == 201
    assert len(server.received) == 1  # only the corrected call reached the tenant
    first = _tool_results(alice)[0]
    assert "do not match the tool's schema" in first["error"] and "order" in first["error"]


def test_retries_only_when_it_may_help_and_with_the_same_ids(
    alice: Persona, llm: ScriptedBackend
) -> None:
    replies = iter([Reply(503), Reply(429, headers={"Retry-After": "0"}), Reply(200, b'{"a":1}')])
    with receiver(lambda r: next(replies)) as server:
        _create(alice, url=server.url)
        _use(alice, "order_status")
        llm.script(
            Step(reply="", tool_calls=[ToolCall("c1", "order_status", {"order": 1})]),
            Step(reply="done"),
        )
        _turn(alice)
    assert len(server.received) == 3
    assert len({r.headers["webhook-id"] for r in server.received}) == 1
    assert len({r.headers["idempotency-key"] for r in server.received}) == 1
    assert _tool_results(alice) == [{"a": 1}]


def test_a_client_error_or_an_oversized_answer_is_an_error_result(
    alice: Persona, llm: ScriptedBackend
) -> None:
    def answer(request: Received) -> Reply:
        order = json.loads(request.body)["arguments"]["order"]
        return Reply(404, b"no such order") if order == 1 else Reply(200, b"x" * 300_000)

    with receiver(answer) as server:
        _create(alice, url=server.url)
        _use(alice, "order_status")
        calls = [
            ToolCall("c1", "order_status", {"order": 1}),
            ToolCall("c2", "order_status", {"order": 2}),
        ]
        llm.script(Step(reply="", tool_calls=calls), Step(reply="sorry"))
        assert _turn(alice).status_code == 201
    assert len(server.received) == 2  # a 404 is not retried; the oversized one failed fast
    missing, oversized = _tool_results(alice)
    assert missing == {"error": "The tool's server answered 404.", "body": "no such order"}
    assert "error" in oversized


def test_secret_headers_are_sent_and_never_shown(alice: Persona, llm: ScriptedBackend) -> None:
    alice.client().post("/api/v1/secrets/", {"name": "erp", "value": "s3cr3t"}, format="json")
    with receiver(lambda r: Reply(200, b"{}")) as server:
        created = _create(alice, url=server.url, headers={"X-Api-Key": "erp"})
        assert "s3cr3t" not in created.content.decode()
        _use(alice, "order_status")
        llm.script(
            Step(reply="", tool_calls=[ToolCall("c1", "order_status", {"order": 1})]),
            Step(reply="ok"),
        )
        _turn(alice)
    assert server.received[0].headers["x-api-key"] == "s3cr3t"
    shown = alice.client().get("/api/v1/tools/").content.decode()
    assert "s3cr3t" not in shown and '"X-Api-Key":"erp"' in shown.replace(" ", "")


def test_a_client_tool_waits_for_the_callers_output(alice: Persona, llm: ScriptedBackend) -> None:
    created = alice.client().post(
        "/api/v1/tools/",
        {"name": "read_clipboard", "kind": "client", "description": "The user's clipboard."},
        format="json",
    )
    assert created.status_code == 201 and created.json()["secret"] is None
    _use(alice, "read_clipboard")
    llm.script(Step(reply="", tool_calls=[ToolCall("k1", "read_clipboard", {})]))
    run = (
        alice.client()
        .post(f"/api/v1/sessions/{alice.session.pk}/runs/", {"content": "paste"}, format="json")
        .json()
    )
    assert run["status"] == "requires_action"
    assert run["required_action"]["tool_calls"][0]["kind"] == "client"
    assert Agent.objects.get(pk=alice.agent.pk).tools == ["read_clipboard"]


def test_a_slow_server_is_retried_then_gives_an_error_result(
    alice: Persona, llm: ScriptedBackend
) -> None:
    with receiver(lambda r: Reply(200, b"{}", delay=1.5)) as server:
        _create(alice, url=server.url, timeout_seconds=1)
        _use(alice, "order_status")
        llm.script(
            Step(reply="", tool_calls=[ToolCall("c1", "order_status", {"order": 1})]),
            Step(reply="The order system is slow today."),
        )
        assert _turn(alice).status_code == 201
    assert len(server.received) == 3  # a timeout may pass: tried three times
    (result,) = _tool_results(alice)
    assert "after 3 attempts" in result["error"]
