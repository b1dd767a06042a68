"""Issue: a model-level check the serializer did not make answered 500. The API layer now
answers a Django ValidationError or a database constraint like a serializer error: 422 (409
for a duplicate) with field pointers, and the request changes nothing."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, transaction
from django.db.models import CheckConstraint

from agentplatform.http.constraints import constraint_fields
from agentplatform.http.problems import exception_handler
from agentplatform.http.serializers import NUL_REFUSED
from agentplatform.models import TenantSecret
from agents.api import serializers as agent_serializers
from agents.models import Agent, Session
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _pointers(exc: Exception) -> tuple[int, list[str]]:
    response = exception_handler(exc, {})
    return response.status_code, [e["pointer"] for e in response.data.get("errors", [])]


def test_model_validation_the_serializer_missed_is_a_422_through_the_api(
    alice: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The serializer forgets its `llm` check; the model's full_clean still makes it.
    monkeypatch.setattr(agent_serializers, "validate_llm", lambda value: None)
    before = Agent.objects.count()
    response = alice.client().post(
        "/api/v1/agents/", {"name": "X", "llm": {"model": 5}}, format="json"
    )
    assert response.status_code == 422, response.json()
    assert response["Content-Type"] == "application/problem+json"
    assert [e["pointer"] for e in response.json()["errors"]] == ["#/llm"]
    assert Agent.objects.count() == before


def test_a_check_constraint_is_a_422_naming_its_field(alice: Persona) -> None:
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        Agent.objects.create(tenant=alice.tenant, name="x", context_token_budget=1)
    assert _pointers(caught.value) == (422, ["#/context_token_budget"])


def test_a_duplicate_is_a_409_naming_its_field(alice: Persona) -> None:
    TenantSecret.objects.create(tenant=alice.tenant, name="k", ciphertext="c")
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        TenantSecret.objects.create(tenant=alice.tenant, name="k", ciphertext="c")
    response = exception_handler(caught.value, {})
    assert response.status_code == 409
    assert response.data["detail"] == "An object with this name already exists."


def test_a_model_validation_error_is_a_422_per_field(alice: Persona) -> None:
    agent = Agent(tenant=alice.tenant, name="", llm="gpt")
    with pytest.raises(DjangoValidationError) as caught:
        agent.full_clean()
    status, pointers = _pointers(caught.value)
    assert status == 422
    assert sorted(pointers) == ["#/llm", "#/name"]


def test_every_check_constraint_names_the_fields_it_checks() -> None:
    from django.apps import apps

    checks = [
        constraint.name
        for model in apps.get_models()
        for constraint in model._meta.constraints
        if isinstance(constraint, CheckConstraint)
    ]
    assert checks, "the project has check constraints"
    assert [name for name in checks if not constraint_fields()[name]] == []


def test_a_value_postgresql_cannot_store_is_a_422(alice: Persona) -> None:
    with pytest.raises(DataError) as caught, transaction.atomic():
        Session.objects.create(
            tenant=alice.tenant, agent=alice.agent, user_id="u", metadata={"k": "a\x00b"}
        )
    status, _ = _pointers(caught.value)
    assert status == 422


def test_nul_anywhere_in_a_json_object_is_refused_by_the_serializer(alice: Persona) -> None:
    before = Session.objects.count()
    for metadata in ({"k": "a\x00"}, {"a\x00": 1}, {"k": [{"n": ["\x00"]}]}):
        response = alice.client().post(
            "/api/v1/sessions/",
            {"agent": str(alice.agent.pk), "user_id": "u", "metadata": metadata},
            format="json",
        )
        assert response.status_code == 422, response.json()
        assert response.json()["errors"] == [{"pointer": "#/metadata", "detail": NUL_REFUSED}]
    assert Session.objects.count() == before
