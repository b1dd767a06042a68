from __future__ import annotations

import json

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from agentplatform.http.problems import exception_handler, handler500
from agents.models import Agent
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _post_raw(persona: Persona, path: str, body: bytes) -> tuple[int, dict, str]:
    response = persona.client().generic("POST", path, body, content_type="application/json")
    return response.status_code, response.json(), response["Content-Type"]


def test_malformed_json_is_400_and_creates_nothing(alice: Persona) -> None:
    before = Agent.objects.count()
    status, body, content_type = _post_raw(alice, "/api/v1/agents/", b'{"name": ')
    assert status == 400
    assert content_type == "application/problem+json"
    assert "JSON" in body["detail"]
    assert Agent.objects.count() == before


def test_wrong_types_are_422_with_field_pointers(alice: Persona) -> None:
    payload = {"name": "x", "context_token_budget": "lots", "double_text_policy": 3}
    status, body, _ = _post_raw(alice, "/api/v1/agents/", json.dumps(payload).encode())
    assert status == 422
    pointers = {error["pointer"] for error in body["errors"]}
    assert {"#/context_token_budget", "#/double_text_policy"} <= pointers


def test_unknown_fields_are_refused(alice: Persona) -> None:
    payload = {"name": "x", "sytem_prompt": "typo"}
    status, body, _ = _post_raw(alice, "/api/v1/agents/", json.dumps(payload).encode())
    assert status == 422
    assert body["errors"] == [{"pointer": "#/sytem_prompt", "detail": "Unknown field."}]


def test_a_json_array_body_is_refused_cleanly(alice: Persona) -> None:
    status, body, _ = _post_raw(alice, "/api/v1/agents/", b"[1, 2]")
    assert status == 422
    assert body["errors"]


@override_settings(API_MAX_BODY_BYTES=2048)
def test_oversized_body_is_413_and_creates_nothing(alice: Persona) -> None:
    before = Agent.objects.count()
    payload = {"name": "big", "system_prompt": "x" * 5000}
    status, body, content_type = _post_raw(alice, "/api/v1/agents/", json.dumps(payload).encode())
    assert status == 413
    assert content_type == "application/problem+json"
    assert "limit" in body["detail"]
    assert Agent.objects.count() == before


def test_unknown_api_path_is_a_404_problem(alice: Persona) -> None:
    response = alice.client().get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_method_not_allowed_is_a_problem(alice: Persona) -> None:
    response = alice.client().put(f"/api/v1/agents/{alice.agent.pk}/", {}, format="json")
    assert response.status_code == 405
    assert response.json()["status"] == 405


def test_unexpected_errors_become_500_problems_without_internals() -> None:
    response = exception_handler(RuntimeError("secret internals"), {"view": None})
    assert response.status_code == 500
    assert response.data["status"] == 500
    assert "secret internals" not in json.dumps(response.data)


def test_django_level_500_handler_answers_a_problem() -> None:
    response = handler500(None)  # type: ignore[arg-type]
    assert response.status_code == 500
    assert response["Content-Type"] == "application/problem+json"


def test_problem_for_unauthenticated_request_has_www_authenticate() -> None:
    response = APIClient().get("/api/v1/sessions/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
