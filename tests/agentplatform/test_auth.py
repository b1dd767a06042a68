from __future__ import annotations

import pytest
from rest_framework.authentication import get_authorization_header
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from agentplatform.core import rls
from agentplatform.core.audit import SYSTEM
from agentplatform.core.services import api_key_authenticate, api_key_create, api_key_revoke
from agentplatform.http.authentication import authorization_header
from agentplatform.models import ApiKey, Tenant
from agents.models import Session
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


def _field_values(obj: ApiKey | Tenant) -> dict[str, object]:
    return {field.attname: getattr(obj, field.attname) for field in obj._meta.concrete_fields}


def test_the_key_lookup_loads_the_key_and_its_tenant_as_the_orm_would(alice: Persona) -> None:
    with rls.request_scope():
        key = api_key_authenticate(alice.api_key)
    assert key is not None
    with rls.cross_tenant(rls.CrossTenantReason.TEST_FIXTURES):
        stored = ApiKey.objects.select_related("tenant").get(pk=key.pk)
    assert _field_values(key) == _field_values(stored)
    assert _field_values(key.tenant) == _field_values(stored.tenant)
    assert not key._state.adding and not key.tenant._state.adding


@pytest.mark.parametrize("secret", ["right", "wrong", "unknown"])
def test_the_key_lookup_leaves_no_wider_scope_to_the_code_after_it(
    alice: Persona, bob: Persona, secret: str
) -> None:
    """The lookup moves the connection into the key's tenant in its own statement; code
    running in another scope afterwards still sees only its own scope's rows, also when no
    key matched and the connection kept the scope it came with (here bob's)."""
    raw = {
        "right": alice.api_key,
        "wrong": alice.api_key[:-4] + "nope",
        "unknown": "ap_nosuchprefix_secret",
    }[secret]
    with rls.tenant_scope(bob.tenant.pk):
        assert Session.objects.exists()  # the connection is in bob's scope now
    with rls.request_scope():
        found = api_key_authenticate(raw)
        unscoped = Session.objects.count()
        with rls.tenant_scope(bob.tenant.pk):
            bobs_view = set(Session.objects.values_list("tenant_id", flat=True))
    assert (found is not None) == (secret == "right")
    assert unscoped == 0
    assert bobs_view == {bob.tenant.pk}


@pytest.mark.parametrize(
    "header", [None, "", "Bearer ap_x_y", "bearer  ap_x_y ", "Basic Zm9vOmJhcg==", "é"]
)
def test_the_authorization_header_is_read_as_drf_reads_it(header: str | None) -> None:
    django_request = APIRequestFactory().get("/api/v1/agents/")
    if header is not None:
        django_request.META["HTTP_AUTHORIZATION"] = header
    request = Request(django_request)
    assert authorization_header(request) == get_authorization_header(request)
