from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agentplatform.http.idempotency import idempotency_purge_expired, request_fingerprint
from agentplatform.models import IdempotencyRecord
from agents.models import Agent, Session
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _create_agent(persona: Persona, key: str, name: str = "Idem") -> tuple[int, dict, str]:
    response = persona.client().post(
        "/api/v1/agents/", {"name": name}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    return response.status_code, response.json(), response.get("Idempotent-Replayed", "")


def test_a_repeated_post_returns_the_first_result_and_does_no_work(alice: Persona) -> None:
    first = _create_agent(alice, "k-1")
    second = _create_agent(alice, "k-1")
    assert first[0] == second[0] == 201
    assert first[1] == second[1]
    assert second[2] == "true"
    assert Agent.objects.filter(tenant=alice.tenant, name="Idem").count() == 1


def test_the_same_key_with_another_body_is_refused(alice: Persona) -> None:
    _create_agent(alice, "k-2", name="one")
    status, body, _ = _create_agent(alice, "k-2", name="two")
    assert status == 422
    assert body["errors"][0]["pointer"] == "#/Idempotency-Key"
    assert not Agent.objects.filter(name="two").exists()


def test_keys_are_per_tenant(alice: Persona, bob: Persona) -> None:
    assert _create_agent(alice, "shared")[0] == 201
    status, body, replayed = _create_agent(bob, "shared")
    assert status == 201 and replayed == ""
    assert body["id"] != _create_agent(alice, "shared")[1]["id"]


def test_a_failed_validation_is_not_remembered_but_its_retry_runs(alice: Persona) -> None:
    client = alice.client()
    bad = client.post(
        "/api/v1/sessions/",
        {"agent": str(alice.agent.pk)},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-3",
    )
    assert bad.status_code == 422
    good = client.post(
        "/api/v1/sessions/",
        {"agent": str(alice.agent.pk), "user_id": "u"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-4",
    )
    assert good.status_code == 201
    again = client.post(
        "/api/v1/sessions/",
        {"agent": str(alice.agent.pk), "user_id": "u"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-4",
    )
    assert again.json()["id"] == good.json()["id"]
    assert Session.objects.filter(tenant=alice.tenant, user_id="u").count() == 1


def test_an_in_progress_key_answers_409(alice: Persona) -> None:
    now = timezone.now()
    IdempotencyRecord.objects.create(
        tenant=alice.tenant,
        key="busy",
        method="POST",
        path="/api/v1/agents/",
        fingerprint=request_fingerprint("POST", "/api/v1/agents/", {"name": "n"}),
        locked_until=now + timedelta(seconds=30),
        expires_at=now + timedelta(hours=1),
    )
    response = alice.client().post(
        "/api/v1/agents/", {"name": "n"}, format="json", HTTP_IDEMPOTENCY_KEY="busy"
    )
    assert response.status_code == 409


def test_a_key_whose_holder_died_is_taken_over(alice: Persona) -> None:
    now = timezone.now()
    IdempotencyRecord.objects.create(
        tenant=alice.tenant,
        key="dead",
        method="POST",
        path="/api/v1/agents/",
        fingerprint=request_fingerprint("POST", "/api/v1/agents/", {"name": "taken-over"}),
        locked_until=now - timedelta(seconds=1),
        expires_at=now + timedelta(hours=1),
    )
    assert _create_agent(alice, "dead", name="taken-over")[0] == 201


def test_overlong_key_is_refused(alice: Persona) -> None:
    assert _create_agent(alice, "k" * 300)[0] == 422


def test_expired_records_are_purged(alice: Persona) -> None:
    _create_agent(alice, "old")
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert idempotency_purge_expired() == 1
    assert not IdempotencyRecord.objects.exists()
