"""The operators' console is tenant-scoped on every page: two operators of two tenants,
each checking that the other's rows are absent and the other's URLs are 404."""

from __future__ import annotations

import json

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from agentplatform.core.console import TenantScopedAdmin
from agentplatform.models import (
    ApiKey,
    AuditEvent,
    Membership,
    WebhookDelivery,
    WebhookEndpoint,
)
from agents.models import Message
from memory.models import Checkpoint, Memory, RetentionPolicy, Summary
from tests.conftest import Persona, populate

pytestmark = pytest.mark.django_db

SCOPED = [model for model, model_admin in admin.site._registry.items()
          if isinstance(model_admin, TenantScopedAdmin)]  # fmt: skip


def _rows_of(persona: Persona) -> dict[type, list[str]]:
    """A primary key of every scoped model's rows belonging to `persona`'s tenant."""
    rows: dict[type, list[str]] = {}
    for model in SCOPED:
        field = admin.site._registry[model].tenant_field
        queryset = model._default_manager.filter(**{field: persona.tenant.pk})
        rows[model] = [str(pk) for pk in queryset.values_list("pk", flat=True)[:5]]
    return rows


def _login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def two_tenants(alice: Persona, bob: Persona) -> tuple[Persona, Persona]:
    populate(alice)
    populate(bob)
    return alice, bob


def test_every_scoped_model_is_covered(two_tenants: tuple[Persona, Persona]) -> None:
    expected = {
        ApiKey,
        AuditEvent,
        Membership,
        Message,
        Checkpoint,
        Memory,
        Summary,
        RetentionPolicy,
        WebhookEndpoint,
        WebhookDelivery,
    }
    assert expected <= set(SCOPED)
    for model, pks in _rows_of(two_tenants[1]).items():
        assert pks, f"no {model.__name__} rows for the test to look for"


@pytest.mark.parametrize("direction", ["alice-looks-at-bob", "bob-looks-at-alice"])
def test_another_tenants_rows_are_absent_from_every_page(
    two_tenants: tuple[Persona, Persona], direction: str
) -> None:
    me, other = two_tenants if direction == "alice-looks-at-bob" else two_tenants[::-1]
    client = _login(me.operator)
    foreign = _rows_of(other)
    mine = _rows_of(me)
    for model, pks in foreign.items():
        opts = model._meta
        changelist = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert changelist.status_code == 200, opts.label
        body = changelist.content.decode()
        for pk in pks:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
            assert change not in body, f"{opts.label} {pk} listed for another tenant"
            for view in ("change", "history", "delete"):
                url = reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[pk])
                assert client.get(url).status_code == 404, (opts.label, view)
        # The filter by tenant offers only the operator's own tenant.
        assert f"tenant__id__exact={other.tenant.pk}" not in body, opts.label
        own = [
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
            for pk in mine[model]
        ]
        assert any(url in body for url in own), f"{opts.label}: own rows missing"
    # Search does not reach into another tenant either.
    found = client.get(reverse("admin:memory_memory_changelist"), {"q": other.tenant.slug})
    assert f"works at {other.tenant.slug}" not in found.content.decode()
    assert "0 results" in found.content.decode()


def test_autocomplete_and_the_rollback_pages_are_scoped(
    two_tenants: tuple[Persona, Persona],
) -> None:
    alice, bob = two_tenants
    client = _login(alice.operator)
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "memory", "model_name": "checkpoint", "field_name": "session", "term": ""},
    )
    assert response.status_code == 200
    ids = {item["id"] for item in json.loads(response.content)["results"]}
    assert str(alice.session.pk) in ids and str(bob.session.pk) not in ids
    bobs_checkpoint = Checkpoint.objects.filter(tenant=bob.tenant).first()
    assert bobs_checkpoint is not None
    for view in ("rollback", "fork"):
        url = reverse(f"admin:memory_checkpoint_{view}", args=[bobs_checkpoint.pk])
        assert client.get(url).status_code == 404
        assert client.post(url).status_code == 404
    assert Message.objects.filter(tenant=bob.tenant, status="rolled_back").count() == 0


def test_actions_ignore_another_tenants_ids(two_tenants: tuple[Persona, Persona]) -> None:
    alice, bob = two_tenants
    client = _login(alice.operator)
    bobs_key = ApiKey.objects.get(tenant=bob.tenant)
    response = client.post(
        reverse("admin:agentplatform_apikey_changelist"),
        {"action": "revoke", "_selected_action": [str(bobs_key.pk)]},
    )
    assert response.status_code in (200, 302)
    bobs_key.refresh_from_db()
    assert bobs_key.revoked_at is None


def test_a_viewer_reads_but_cannot_change_or_undo(two_tenants: tuple[Persona, Persona]) -> None:
    alice, _ = two_tenants
    viewer = User.objects.create_user("alice-viewer", password="pw", is_staff=True)
    Membership.objects.create(tenant=alice.tenant, user=viewer, role=Membership.Role.VIEWER)
    client = _login(viewer)
    agent_url = reverse("admin:agents_agent_change", args=[alice.agent.pk])
    assert client.get(agent_url).status_code == 200
    assert client.post(agent_url, {"name": "renamed"}).status_code == 403
    checkpoint = Checkpoint.objects.filter(tenant=alice.tenant).first()
    assert checkpoint is not None
    rollback = reverse("admin:memory_checkpoint_rollback", args=[checkpoint.pk])
    assert client.post(rollback).status_code == 403
    key = ApiKey.objects.get(tenant=alice.tenant)
    client.post(
        reverse("admin:agentplatform_apikey_changelist"),
        {"action": "revoke", "_selected_action": [str(key.pk)]},
    )
    key.refresh_from_db()
    assert key.revoked_at is None


def test_a_managers_change_is_audited_with_the_operator(
    two_tenants: tuple[Persona, Persona],
) -> None:
    alice, _ = two_tenants
    client = _login(alice.operator)
    key = ApiKey.objects.get(tenant=alice.tenant)
    client.post(
        reverse("admin:agentplatform_apikey_changelist"),
        {"action": "revoke", "_selected_action": [str(key.pk)]},
    )
    key.refresh_from_db()
    assert key.revoked_at is not None
    event = AuditEvent.objects.get(action="api_key.revoked")
    assert (event.actor_kind, event.actor_id, event.tenant_id) == (
        "operator",
        str(alice.operator.pk),
        alice.tenant.pk,
    )
