from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agentplatform.core.audit import SYSTEM
from agentplatform.core.services import api_key_create, api_key_revoke
from agentplatform.models import ApiKey, Tenant
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _get(key: str | None) -> tuple[int, dict, str]:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=key)
    response = client.get("/api/v1/agents/")
    return response.status_code, response.json(), response["Content-Type"]


def test_missing_key_is_401_problem(alice: Persona) -> None:
    status, body, content_type = _get(None)
    assert status == 401
    assert content_type == "application/problem+json"
    assert body["status"] == 401 and body["title"] and body["detail"]


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer ap_abc_def", "Basic Zm9vOmJhcg==", "Bearer ", "Bearer ap__"],
)
def test_malformed_or_unknown_keys_are_401(alice: Persona, header: str) -> None:
    assert _get(header)[0] == 401


def test_a_key_with_the_right_prefix_but_wrong_secret_is_401(alice: Persona) -> None:
    prefix = alice.api_key.split("_")[1]
    assert _get(f"Bearer ap_{prefix}_wrong-secret")[0] == 401


def test_revoked_key_is_401_and_other_keys_still_work(alice: Persona) -> None:
    second_key, second_raw = api_key_create(actor=SYSTEM, tenant=alice.tenant, name="second")
    api_key_revoke(actor=SYSTEM, key=second_key)
    assert _get(f"Bearer {second_raw}")[0] == 401
    assert _get(f"Bearer {alice.api_key}")[0] == 200


def test_suspended_tenant_keys_are_401(alice: Persona) -> None:
    Tenant.objects.filter(pk=alice.tenant.pk).update(status=Tenant.Status.SUSPENDED)
    assert _get(f"Bearer {alice.api_key}")[0] == 401


def test_only_the_hash_of_a_key_is_stored(alice: Persona) -> None:
    secret = alice.api_key.split("_", 2)[2]
    key = ApiKey.objects.get(tenant=alice.tenant)
    assert secret not in key.hashed_secret
    assert len(key.hashed_secret) == 64


def test_using_a_key_records_last_used(alice: Persona) -> None:
    assert ApiKey.objects.get(tenant=alice.tenant).last_used_at is None
    _get(f"Bearer {alice.api_key}")
    assert ApiKey.objects.get(tenant=alice.tenant).last_used_at is not None
