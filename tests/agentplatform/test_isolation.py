"""The adversarial isolation suite: alice tries to reach bob's data every way there is.

Two layers are proven separately. The database's: under a tenant's scope a deliberately
unscoped query (ORM or raw SQL) returns no foreign row and cannot write one, because of the
row-level security policies. The application's: every REST operation in the schema, given
bob's ids with alice's key, answers 404 (the same bytes as for an id that never existed) with
nothing of bob's in the body; the chat page and the websocket the same; memory search never
crosses tenants or end users, even for identical texts. The admin pages have their own suite
(test_console_isolation.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Model
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator
from pgvector.django import CosineDistance

from agentplatform.core import rls
from agentplatform.core.audit import SYSTEM
from agentplatform.models import Tenant, WebhookDelivery, WebhookEndpoint, WebhookEvent
from agentplatform.project.checks import row_level_security_binds
from agents.client_tokens import client_token_mint
from agents.models import Agent, Message, Run, Schedule, Session, TenantTool
from memory.embeddings import embed_one
from memory.models import Checkpoint, Memory, Summary
from memory.semantic import Source, memory_upsert
from tests.conftest import Persona, populate

pytestmark = pytest.mark.django_db

SAME_TEXT = "I am allergic to peanuts and I live in Lisbon."


@pytest.fixture
def two_tenants(alice: Persona, bob: Persona) -> tuple[Persona, Persona]:
    populate(alice)
    populate(bob)
    return alice, bob


def _tenant_models() -> list[tuple[type[Model], str]]:
    """Every model whose table the policies protect, with its tenant column's field."""
    tables = dict(rls.protected_tables())
    found = []
    for model in apps.get_models():
        column = tables.get(model._meta.db_table)
        if column is not None:
            field = next(f for f in model._meta.concrete_fields if f.column == column)
            found.append((model, field.attname))
    return found


# --- the database layer -------------------------------------------------------------------


def test_the_application_connects_as_a_role_the_policies_bind() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        role, superuser, bypasses = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = %s",
            [role],
        )
        owned = cursor.fetchone()[0]
    assert (superuser, bypasses, owned) == (False, False, 0), role
    assert not rls.role_bypasses_rls()


@pytest.mark.django_db(transaction=True)  # switches connections
def test_a_system_check_warns_when_the_application_role_escapes_the_policies() -> None:
    assert row_level_security_binds(databases=["default"]) == []
    # A deployment whose application connects as the superuser (the embedded owner).
    with override_settings(DATABASE_APP=settings.DATABASE_OWNER), rls.as_owner():
        warnings = row_level_security_binds(databases=["default"])
    assert [w.id for w in warnings] == ["agentplatform.W001"]


def test_every_table_with_tenant_data_has_forced_row_level_security() -> None:
    """Read from the catalog, not from our list: a new table with a tenant column and no
    policy fails here even if rls.protected_tables() missed it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
            "  (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid "
            "   AND p.polname = %s AND p.polcmd = '*') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND (c.relname = %s OR EXISTS ("
            "  SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
            "  AND a.attname = 'tenant_id' AND NOT a.attisdropped))",
            [rls.POLICY, Tenant._meta.db_table],
        )
        rows = cursor.fetchall()
    assert len(rows) >= 15
    unprotected = [
        name
        for name, enabled, forced, policies in rows
        if (enabled, forced, policies) != (True, True, 1)
    ]
    assert unprotected == []


def test_an_unscoped_query_sees_only_the_scopes_tenant(
    two_tenants: tuple[Persona, Persona],
) -> None:
    alice, bob = two_tenants
    models = _tenant_models()
    with rls.tenant_scope(alice.tenant.pk):
        seen = {
            model: {str(v) for v in model._default_manager.values_list(field, flat=True)}
            for model, field in models
        }
        with connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT tenant_id::text FROM agents_message")
            raw = {row[0] for row in cursor.fetchall()}
        bobs_session = Session.objects.filter(pk=bob.session.pk).first()
    assert all(tenants <= {str(alice.tenant.pk)} for tenants in seen.values()), seen
    assert sum(1 for tenants in seen.values() if tenants) >= 10  # not vacuous
    assert raw == {str(alice.tenant.pk)}
    assert bobs_session is None


def test_no_scope_sees_nothing(two_tenants: tuple[Persona, Persona]) -> None:
    with rls.request_scope():
        counts = {model.__name__: model._default_manager.count() for model, _ in _tenant_models()}
    assert set(counts.values()) == {0}, counts


def test_a_tenants_scope_cannot_write_another_tenants_rows(
    two_tenants: tuple[Persona, Persona],
) -> None:
    alice, bob = two_tenants
    with rls.tenant_scope(alice.tenant.pk):
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            Agent.objects.create(tenant_id=bob.tenant.pk, name="planted")
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            Agent.objects.filter(pk=alice.agent.pk).update(tenant_id=bob.tenant.pk)
        updated = Message.objects.filter(tenant_id=bob.tenant.pk).update(content="overwritten")
        deleted, _ = Memory.objects.filter(tenant_id=bob.tenant.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM agents_message WHERE tenant_id = %s", [bob.tenant.pk])
            raw_deleted = cursor.rowcount
    assert (updated, deleted, raw_deleted) == (0, 0, 0)
    assert Message.objects.filter(tenant=bob.tenant).exclude(content="overwritten").exists()
    assert Memory.objects.filter(tenant=bob.tenant).exists()


def test_a_rolled_back_transaction_does_not_leave_the_connection_in_a_wider_scope(
    two_tenants: tuple[Persona, Persona],
) -> None:
    """A rollback undoes the SET made inside it, so the backend forgets what it applied.
    Here the savepoint is taken in the cross-tenant scope, the tenant's scope is applied
    after it, and the rollback runs in the tenant's scope: without the backend forgetting,
    the next query would run with every tenant visible."""
    alice, _ = two_tenants
    with rls.tenant_scope(alice.tenant.pk):
        with rls.cross_tenant(rls.CrossTenantReason.TEST_FIXTURES):
            savepoint = transaction.savepoint()
        assert Session.objects.count() == 1
        transaction.savepoint_rollback(savepoint)
        assert set(Session.objects.values_list("tenant_id", flat=True)) == {alice.tenant.pk}


def test_identical_memories_never_cross_tenants_or_end_users_in_the_database(
    alice: Persona, bob: Persona
) -> None:
    mine = memory_upsert(
        actor=SYSTEM, tenant=alice.tenant, user_id="u1", text=SAME_TEXT, source=Source("api")
    )[0]
    memory_upsert(
        actor=SYSTEM, tenant=alice.tenant, user_id="u2", text=SAME_TEXT, source=Source("api")
    )
    memory_upsert(
        actor=SYSTEM, tenant=bob.tenant, user_id="u1", text=SAME_TEXT, source=Source("api")
    )
    vector = embed_one(SAME_TEXT)
    with rls.tenant_scope(alice.tenant.pk):
        # Nearest neighbours with no tenant filter at all: the policy is the only guard.
        nearest = list(
            Memory.objects.order_by(CosineDistance("embedding", vector)).values_list(
                "tenant_id", "user_id"
            )
        )
        users = set(Memory.objects.filter(user_id="u1").values_list("pk", flat=True))
    assert sorted(nearest, key=str) == sorted(
        [(alice.tenant.pk, "u1"), (alice.tenant.pk, "u2")], key=str
    )
    assert users == {mine.pk}


# --- the REST layer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: dict[str, Any] | None = None


def _bobs_ids(bob: Persona) -> dict[str, str]:
    return {
        "session": str(bob.session.pk),
        "agent": str(bob.agent.pk),
        "memory": str(Memory.objects.filter(tenant=bob.tenant).values_list("pk", flat=True)[0]),
        "checkpoint": str(
            Checkpoint.objects.filter(tenant=bob.tenant).values_list("pk", flat=True)[0]
        ),
        "secret": "llm",
        "user": bob.user_id,
        "run": str(Run.objects.filter(tenant=bob.tenant).values_list("pk", flat=True)[0]),
        "tool": str(TenantTool.objects.filter(tenant=bob.tenant).values_list("pk", flat=True)[0]),
        "webhook": _webhook_of(bob),
        "delivery": str(WebhookDelivery.objects.get(tenant=bob.tenant).pk),
        "schedule": str(Schedule.objects.get(tenant=bob.tenant).pk),
    }


def _webhook_of(persona: Persona) -> str:
    return str(WebhookEndpoint.objects.get(tenant=persona.tenant).pk)


def _cases(ids: dict[str, str], own: dict[str, str]) -> dict[str, list[Case]]:
    """Per schema path, every operation aimed at bob's objects."""
    s, a, m, c = ids["session"], ids["agent"], ids["memory"], ids["checkpoint"]
    r, t = ids["run"], ids["tool"]
    r, sc = ids["run"], ids["schedule"]
    w, d, own_session, own_w = ids["webhook"], ids["delivery"], own["session"], own["webhook"]
    return {
        "/api/v1/runs/{id}/": [Case("get", f"/api/v1/runs/{r}/")],
        "/api/v1/tools/{id}/": [
            Case("get", f"/api/v1/tools/{t}/"),
            Case("patch", f"/api/v1/tools/{t}/", {"description": "mine now"}),
            Case("delete", f"/api/v1/tools/{t}/"),
        ],
        "/api/v1/tools/{id}/refresh/": [Case("post", f"/api/v1/tools/{t}/refresh/", {})],
        "/api/v1/runs/{id}/cancel/": [Case("post", f"/api/v1/runs/{r}/cancel/", {})],
        "/api/v1/runs/{id}/actions/": [
            Case(
                "post",
                f"/api/v1/runs/{r}/actions/",
                {"tool_outputs": [{"tool_call_id": "c1", "output": 1}]},
            )
        ],
        "/api/v1/runs/{id}/events/": [Case("get", f"/api/v1/runs/{r}/events/")],
        "/api/v1/sessions/{session_pk}/runs/": [
            Case("get", f"/api/v1/sessions/{s}/runs/"),
            Case("post", f"/api/v1/sessions/{s}/runs/", {"content": "hi"}),
            Case("post", f"/api/v1/sessions/{s}/runs/", {"content": "hi", "background": True}),
        ],
        "/api/v1/sessions/{session_pk}/schedules/": [
            Case("get", f"/api/v1/sessions/{s}/schedules/"),
            Case("post", f"/api/v1/sessions/{s}/schedules/", {"cron": "* * * * *", "content": "x"}),
        ],
        "/api/v1/schedules/{id}/": [
            Case("get", f"/api/v1/schedules/{sc}/"),
            Case("patch", f"/api/v1/schedules/{sc}/", {"enabled": False}),
            Case("delete", f"/api/v1/schedules/{sc}/"),
        ],
        "/api/v1/agents/{id}/": [
            Case("get", f"/api/v1/agents/{a}/"),
            Case("patch", f"/api/v1/agents/{a}/", {"name": "mine now"}),
            Case("delete", f"/api/v1/agents/{a}/"),
        ],
        "/api/v1/checkpoints/{id}/": [Case("get", f"/api/v1/checkpoints/{c}/")],
        "/api/v1/memories/{id}/": [
            Case("get", f"/api/v1/memories/{m}/"),
            Case("delete", f"/api/v1/memories/{m}/"),
        ],
        "/api/v1/secrets/{name}/": [Case("delete", f"/api/v1/secrets/{ids['secret']}-x/")],
        "/api/v1/sessions/{id}/": [
            Case("get", f"/api/v1/sessions/{s}/"),
            Case("delete", f"/api/v1/sessions/{s}/"),
        ],
        "/api/v1/sessions/{id}/client-token/": [
            Case("post", f"/api/v1/sessions/{s}/client-token/", {})
        ],
        "/api/v1/sessions/{session_pk}/checkpoints/": [
            Case("get", f"/api/v1/sessions/{s}/checkpoints/")
        ],
        "/api/v1/sessions/{session_pk}/context/": [Case("get", f"/api/v1/sessions/{s}/context/")],
        "/api/v1/sessions/{session_pk}/fork/": [
            Case("post", f"/api/v1/sessions/{s}/fork/", {"checkpoint": c}),
            Case("post", f"/api/v1/sessions/{own_session}/fork/", {"checkpoint": c}),
        ],
        "/api/v1/sessions/{session_pk}/messages/": [
            Case("get", f"/api/v1/sessions/{s}/messages/"),
            Case("post", f"/api/v1/sessions/{s}/messages/", {"content": "hi"}),
        ],
        "/api/v1/sessions/{session_pk}/rollback/": [
            Case("post", f"/api/v1/sessions/{s}/rollback/", {"checkpoint": c}),
            Case("post", f"/api/v1/sessions/{own_session}/rollback/", {"checkpoint": c}),
        ],
        "/api/v1/sessions/{session_pk}/summaries/": [
            Case("get", f"/api/v1/sessions/{s}/summaries/")
        ],
        # Bodies naming bob's objects.
        "/api/v1/sessions/": [Case("post", "/api/v1/sessions/", {"agent": a, "user_id": "x"})],
        "/api/v1/invoke/": [
            Case(
                "post",
                "/api/v1/invoke/",
                {"agent": a, "messages": [{"role": "user", "content": "hi"}]},
            )
        ],
        "/api/v1/memories/": [
            Case("post", "/api/v1/memories/", {"user_id": "x", "text": "a fact", "agent": a})
        ],
        "/api/v1/webhooks/{id}/": [
            Case("get", f"/api/v1/webhooks/{w}/"),
            Case("patch", f"/api/v1/webhooks/{w}/", {"url": "https://mine.example/now"}),
            Case("delete", f"/api/v1/webhooks/{w}/"),
        ],
        "/api/v1/webhooks/{id}/rotate-secret/": [
            Case("post", f"/api/v1/webhooks/{w}/rotate-secret/", {})
        ],
        "/api/v1/webhooks/{id}/test/": [Case("post", f"/api/v1/webhooks/{w}/test/", {})],
        "/api/v1/webhooks/{webhook_pk}/deliveries/": [
            Case("get", f"/api/v1/webhooks/{w}/deliveries/")
        ],
        "/api/v1/webhooks/{webhook_pk}/deliveries/{id}/": [
            Case("get", f"/api/v1/webhooks/{w}/deliveries/{d}/"),
            Case("get", f"/api/v1/webhooks/{own_w}/deliveries/{d}/"),
        ],
        "/api/v1/webhooks/{webhook_pk}/deliveries/{id}/redeliver/": [
            Case("post", f"/api/v1/webhooks/{w}/deliveries/{d}/redeliver/", {}),
            Case("post", f"/api/v1/webhooks/{own_w}/deliveries/{d}/redeliver/", {}),
        ],
    }


# Paths that name no object of another tenant: lists (checked for foreign rows below),
# memory search (its own tests below), erasure by user id (checked below: an end user id is
# the tenant's own namespace, so bob's user id under alice's key erases nothing of bob's).
NO_FOREIGN_ID = {
    "/api/v1/agents/",
    "/api/v1/memories/search/",
    "/api/v1/secrets/",
    "/api/v1/users/{user_id}/erase/",
    "/api/v1/webhooks/",
    "/api/v1/tools/",
}


def test_every_operation_with_another_tenants_ids_is_404_and_says_nothing(
    two_tenants: tuple[Persona, Persona],
) -> None:
    alice, bob = two_tenants
    ids = _bobs_ids(bob)
    own = {"session": str(alice.session.pk), "webhook": _webhook_of(alice)}
    cases = _cases(ids, own)
    assert (
        set(SchemaGenerator().get_schema(public=True)["paths"]) == set(cases) | NO_FOREIGN_ID
    )  # none forgotten
    before = _fingerprint(bob)
    client = alice.client()
    for case in (case for group in cases.values() for case in group):
        response = _send(client, case)
        assert response.status_code == 404, (case, response.status_code, response.content)
        _assert_nothing_of(bob, ids, response.content, case)
        # An id that never existed gets the very same answer: nothing to tell them apart.
        random = _send(client, _with_random_ids(case, ids))
        assert (random.status_code, random.content) == (404, response.content), case
    assert _fingerprint(bob) == before


def test_lists_and_erasure_never_show_or_touch_another_tenants_rows(
    two_tenants: tuple[Persona, Persona],
) -> None:
    alice, bob = two_tenants
    ids = _bobs_ids(bob)
    client = alice.client()
    lists = ("/api/v1/agents/", "/api/v1/sessions/", "/api/v1/memories/", "/api/v1/secrets/",
             "/api/v1/webhooks/")  # fmt: skip
    for path in lists:
        for query in ("", f"?agent={ids['agent']}", f"?user_id={bob.user_id}"):
            response = client.get(path + query)
            assert response.status_code in (200, 422), (path, query)
            _assert_nothing_of(bob, ids, response.content, Case("get", path + query))
    before = _fingerprint(bob)
    receipt = client.post(f"/api/v1/users/{bob.user_id}/erase/", {}, format="json")
    assert receipt.status_code == 200
    assert _fingerprint(bob) == before


def test_memory_search_never_returns_another_tenants_or_users_rows(
    alice: Persona, bob: Persona
) -> None:
    for persona, user_id in ((alice, "u1"), (alice, "u2"), (bob, "u1")):
        created = persona.client().post(
            "/api/v1/memories/", {"user_id": user_id, "text": SAME_TEXT}, format="json"
        )
        assert created.status_code == 201
    for persona in (alice, bob):
        hits = (
            persona.client()
            .post(
                "/api/v1/memories/search/",
                {"user_id": "u1", "query": SAME_TEXT, "k": 50},
                format="json",
            )
            .json()
        )
        owned = set(
            Memory.objects.filter(tenant=persona.tenant, user_id="u1").values_list("pk", flat=True)
        )
        assert len(hits) == 1 and {uuid.UUID(hit["id"]) for hit in hits} == owned


# --- the chat page and the websocket ------------------------------------------------------


def test_the_chat_page_is_404_for_another_tenants_session(
    two_tenants: tuple[Persona, Persona], client: Any
) -> None:
    alice, bob = two_tenants
    alices_token = client_token_mint(session=alice.session).token
    for url in (
        f"/chat/{bob.session.pk}/?token={alices_token}",  # a token for another session
        f"/chat/{bob.session.pk}/",  # alice's operator, logged in
    ):
        client.force_login(alice.operator)
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"hello from bob" not in response.content
    assert client.post(f"/chat/{bob.session.pk}/token/").status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_closes_4404_on_another_tenants_session(
    alice: Persona, bob: Persona
) -> None:
    from tests.agents.test_consumer import _close_code, _socket

    assert await _close_code(_socket(alice, session_id=bob.session.pk)) == 4404
    token = client_token_mint(session=alice.session).token
    path = f"/ws/sessions/{bob.session.pk}/?token={token}"
    assert await _close_code(_socket(alice, path=path, headers=[])) == 4404


# --- helpers ------------------------------------------------------------------------------


def _send(client: Any, case: Case) -> Any:
    call: Callable[..., Any] = getattr(client, case.method)
    if case.body is None:
        return call(case.path)
    return call(case.path, case.body, format="json")


def _with_random_ids(case: Case, ids: dict[str, str]) -> Case:
    text = json.dumps([case.path, case.body])
    for key in ("session", "agent", "memory", "checkpoint", "run", "tool", "webhook", "delivery",
                "schedule"):  # fmt: skip
        text = text.replace(ids[key], str(uuid.uuid4()))
    path, body = json.loads(text)
    return Case(case.method, path, body)


def _assert_nothing_of(bob: Persona, ids: dict[str, str], body: bytes, case: Case) -> None:
    text = body.decode()
    for secret in (str(bob.tenant.pk), bob.tenant.slug, bob.user_id, "hello from bob"):
        assert secret not in text, (case, secret)
    # Alice did not send these.
    for key in ("memory", "checkpoint", "run", "tool", "webhook", "delivery", "schedule"):
        if ids[key] not in json.dumps([case.path, case.body]):
            assert ids[key] not in text, (case, key)


def _fingerprint(persona: Persona) -> dict[str, Any]:
    """Everything of the tenant's that an attack could change."""
    tenant = persona.tenant
    return {
        "agents": sorted(
            Agent.objects.filter(tenant=tenant).values_list("pk", "name", "updated_at")
        ),
        "sessions": sorted(Session.objects.filter(tenant=tenant).values_list("pk", "status")),
        "messages": sorted(Message.objects.filter(tenant=tenant).values_list("pk", "content")),
        "memories": sorted(Memory.objects.filter(tenant=tenant).values_list("pk", "text")),
        "summaries": sorted(Summary.objects.filter(tenant=tenant).values_list("pk", flat=True)),
        "checkpoints": sorted(
            Checkpoint.objects.filter(tenant=tenant).values_list("pk", flat=True)
        ),
        "tools": sorted(
            TenantTool.objects.filter(tenant=tenant).values_list("pk", "description", "updated_at")
        ),
        "runs": sorted(
            Run.objects.filter(tenant=tenant).values_list("pk", "status", "cancel_requested_at")
        ),
        "webhooks": sorted(
            WebhookEndpoint.objects.filter(tenant=tenant).values_list(
                "pk", "url", "enabled", "secret_ciphertext", "updated_at"
            )
        ),
        "deliveries": sorted(
            WebhookDelivery.objects.filter(tenant=tenant).values_list(
                "pk", "status", "next_attempt_at", "attempts"
            )
        ),
        "webhook_events": WebhookEvent.objects.filter(tenant=tenant).count(),
        "schedules": sorted(
            Schedule.objects.filter(tenant=tenant).values_list(
                "pk", "cron", "enabled", "updated_at", "periodic_task__enabled"
            )
        ),
    }
