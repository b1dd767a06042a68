from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.test import override_settings

from agentplatform.infra import redis_keys
from agents.llm.base import ToolCall
from agents.llm.scripted import ScriptedBackend, Step
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _invoke(persona: Persona, payload: dict) -> tuple[int, dict]:
    response = persona.client().post("/api/v1/invoke/", payload, format="json")
    return response.status_code, response.json()


def _row_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def test_invoke_returns_the_updated_history_and_task_state(
    alice: Persona, llm: ScriptedBackend
) -> None:
    call = ToolCall(id="t", name="update_task_state", arguments={"step": "confirm"})
    llm.script(Step(reply="Booked for Tuesday.", tool_calls=[call]))
    status, body = _invoke(
        alice,
        {
            "agent": str(alice.agent.pk),
            "messages": [
                {"role": "user", "content": "Book me a table"},
                {"role": "assistant", "content": "Which day?"},
                {"role": "user", "content": "Tuesday"},
            ],
            "user_config": {"name": "Ada"},
            "task_state": {"step": "ask_day", "party": 2},
        },
    )
    assert status == 200, body
    assert body["message"] == {"role": "assistant", "content": "Booked for Tuesday."}
    assert len(body["messages"]) == 4 and body["messages"][-1] == body["message"]
    assert body["task_state"] == {"step": "confirm", "party": 2}
    prompt = [(m.role, m.content) for m in llm.calls[0]]
    assert ("system", 'User: {"name": "Ada"}') in prompt
    assert prompt[-1] == ("user", "Tuesday")


def test_invoke_keeps_nothing_about_the_caller(alice: Persona, redis_client) -> None:
    before_rows = _row_counts()
    before_keys = set(redis_client.keys("*"))
    status, _ = _invoke(
        alice,
        {"agent": str(alice.agent.pk), "messages": [{"role": "user", "content": "secret-xyz"}]},
    )
    assert status == 200
    assert _row_counts() == before_rows
    new_keys = {key.decode() for key in set(redis_client.keys("*")) - before_keys}
    # Only the tenant's request budget (throttling) may appear; nothing about the caller.
    assert new_keys <= {redis_keys.api_throttle(alice.tenant.pk)}, new_keys
    for key in redis_client.keys("*"):
        assert b"secret-xyz" not in (redis_client.dump(key) or b"")


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": [{"role": "user", "content": "x"}]},
        {"agent": "{agent}", "messages": []},
        {"agent": "{agent}", "messages": [{"role": "assistant", "content": "last is not user"}]},
        {"agent": "{agent}", "messages": [{"role": "tool", "content": "x"}]},
        {"agent": "{agent}", "messages": [{"role": "user", "content": 5}]},
        {"agent": "{agent}", "messages": "hello"},
        {"agent": "{agent}", "messages": [{"role": "user", "content": "x"}], "task_state": [1]},
        {"agent": "{agent}", "messages": [{"role": "user", "content": "x"}], "extra": 1},
    ],
)
def test_invoke_refuses_bad_input(alice: Persona, payload: dict) -> None:
    payload = {k: (str(alice.agent.pk) if v == "{agent}" else v) for k, v in payload.items()}
    assert _invoke(alice, payload)[0] == 422


def test_invoke_with_another_tenants_agent_is_404(alice: Persona, bob: Persona) -> None:
    status, body = _invoke(
        bob, {"agent": str(alice.agent.pk), "messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 404
    assert "alice" not in json.dumps(body)


@override_settings(BODY_LIMITS_BY_PREFIX={"/api/v1/invoke/": 4096})
def test_invoke_body_is_bounded(alice: Persona) -> None:
    messages = [{"role": "user", "content": "y" * 1000} for _ in range(10)]
    status, body = _invoke(alice, {"agent": str(alice.agent.pk), "messages": messages})
    assert status == 413
    assert "4096" in body["detail"]


def test_invoke_with_a_broken_llm_is_502(alice: Persona, llm: ScriptedBackend) -> None:
    llm.script(Step(reply="a b c", fail_after_tokens=1))
    status, body = _invoke(
        alice, {"agent": str(alice.agent.pk), "messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 502
    assert body["status"] == 502
