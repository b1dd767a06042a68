from __future__ import annotations

import pytest
from django.conf import settings

from agents.llm import LLMError, options_for
from agents.models import Agent
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def test_create_read_update_delete_an_agent(alice: Persona) -> None:
    client = alice.client()
    created = client.post(
        "/api/v1/agents/",
        {
            "name": "Support",
            "system_prompt": "Help.",
            "llm": {"model": "gpt-x", "base_url": "http://127.0.0.1:9/v1"},
            "context_token_budget": 2048,
            "working_memory_ttl_seconds": 600,
            "checkpoint_policy": "every_llm_call",
            "double_text_policy": "reject",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    agent_id = created.json()["id"]
    assert client.get(f"/api/v1/agents/{agent_id}/").json()["name"] == "Support"
    patched = client.patch(
        f"/api/v1/agents/{agent_id}/", {"double_text_policy": "interrupt"}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["double_text_policy"] == "interrupt"
    assert client.delete(f"/api/v1/agents/{agent_id}/").status_code == 204
    assert not Agent.objects.filter(pk=agent_id).exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("context_token_budget", 0),
        ("context_token_budget", -5),
        ("working_memory_ttl_seconds", 1),
        ("checkpoint_policy", "sometimes"),
        ("double_text_policy", "ignore"),
        ("context_token_budget", 1_000_001),
        ("working_memory_ttl_seconds", 90 * 86_400 + 1),
        ("checkpoint_policy", "sometimes"),
        ("double_text_policy", "ignore"),
        ("llm", {"model": "m", "base_url": "ftp://x"}),
        ("llm", {"unknown": 1}),
        ("llm", "gpt"),
        ("llm", None),
        ("llm", {"model": 5}),
        ("llm", {"temperature": 2.5}),
        ("llm", {"temperature": True}),
        ("llm", {"max_tokens": 0}),
        ("llm", {"max_tokens": "many"}),
        ("llm", {"api_key_env": {}}),
        # Any other variable would be sent to the tenant's endpoint as its key.
        ("llm", {"api_key_env": "SECRET_KEY"}),
        ("llm", {"api_key_secret": 7}),
        ("llm", {"model": "a\x00b"}),  # PostgreSQL's jsonb cannot hold U+0000
        ("name", ""),
        ("name", "x" * 201),
        ("system_prompt", 0),
        ("tools", "calculator"),
        ("tools", ["no-such-tool"]),
        ("tools", [1]),
    ],
)
def test_invalid_agent_fields_are_422(alice: Persona, field: str, value: object) -> None:
    payload = {"name": "A", field: value}
    response = alice.client().post("/api/v1/agents/", payload, format="json")
    assert response.status_code == 422, response.json()
    assert any(error["pointer"].startswith(f"#/{field}") for error in response.json()["errors"])


@pytest.mark.parametrize("method", ["post", "patch"])
def test_an_empty_llm_means_the_platform_default(alice: Persona, method: str) -> None:
    client = alice.client()
    if method == "post":
        response = client.post("/api/v1/agents/", {"name": "D", "llm": {}}, format="json")
        assert response.status_code == 201, response.json()
    else:
        url = f"/api/v1/agents/{alice.agent.pk}/"
        response = client.patch(url, {"llm": {}}, format="json")
        assert response.status_code == 200, response.json()
    agent = Agent.objects.get(pk=response.json()["id"])
    assert agent.llm == {}
    options = options_for(agent)
    assert (options.model, options.base_url) == (settings.LLM_MODEL or "default", None)


def test_a_full_llm_setting_is_kept(alice: Persona) -> None:
    llm = {
        "model": "m",
        "base_url": "https://llm.example/v1",
        "temperature": 0.2,
        "max_tokens": 64,
        "api_key_env": "LLM_API_KEY_TEAM",
        "api_key_secret": "team-key",
    }
    response = alice.client().post("/api/v1/agents/", {"name": "F", "llm": llm}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["llm"] == llm


def test_a_stored_key_variable_outside_the_allowed_names_is_refused_at_use(
    alice: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_API_KEY_TEAM", "team-secret")
    Agent.objects.filter(pk=alice.agent.pk).update(llm={"api_key_env": "LLM_API_KEY_TEAM"})
    alice.agent.refresh_from_db()
    assert options_for(alice.agent).api_key == "team-secret"
    # Written before the rule (or around the API): never read.
    Agent.objects.filter(pk=alice.agent.pk).update(llm={"api_key_env": "SECRET_KEY"})
    alice.agent.refresh_from_db()
    with pytest.raises(LLMError, match="api_key_env"):
        options_for(alice.agent)


def test_list_shows_only_the_tenants_own_agents(alice: Persona, bob: Persona) -> None:
    names = {agent["name"] for agent in alice.client().get("/api/v1/agents/").json()["results"]}
    assert names == {"alice agent"}


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_tenants_agent_is_404(alice: Persona, bob: Persona, method: str) -> None:
    response = getattr(bob.client(), method)(
        f"/api/v1/agents/{alice.agent.pk}/", {"name": "stolen"}, format="json"
    )
    assert response.status_code == 404
    assert "alice" not in response.content.decode()
    assert Agent.objects.get(pk=alice.agent.pk).name == "alice agent"


def test_missing_and_foreign_agents_look_the_same(alice: Persona, bob: Persona) -> None:
    foreign = bob.client().get(f"/api/v1/agents/{alice.agent.pk}/").json()
    missing = bob.client().get("/api/v1/agents/00000000-0000-0000-0000-000000000000/").json()
    malformed = bob.client().get("/api/v1/agents/not-a-uuid/").json()
    assert foreign == missing == malformed


def test_agent_list_is_cursor_paginated(alice: Persona) -> None:
    client = alice.client()
    for index in range(5):
        client.post("/api/v1/agents/", {"name": f"a{index}"}, format="json")
    first = client.get("/api/v1/agents/?page_size=4").json()
    assert len(first["results"]) == 4 and first["next"]
    second = client.get(first["next"]).json()
    ids = {agent["id"] for agent in first["results"]} | {a["id"] for a in second["results"]}
    assert len(ids) == 6
