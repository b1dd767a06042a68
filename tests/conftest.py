"""Personas shared by every test module: two tenants, each with an operator, an API key,
an agent, an end user and a session (Healthchecks' style)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from agentplatform.core import rls
from agentplatform.core.audit import SYSTEM
from agentplatform.core.services import operator_ensure, tenant_create
from agentplatform.core.webhooks import EventType, event_publish
from agentplatform.models import Membership, Tenant, WebhookAttempt
from agents.engine.turn import turn_run
from agents.llm.scripted import ScriptedBackend, scripted_backend
from agents.models import Agent, Session
from agents.services import agent_create, session_open
from memory.accounting import storage_sample
from memory.models import RetentionPolicy, Summary
from memory.semantic import Source, memory_upsert

SUMMARIZED = EventType.SESSION_SUMMARIZED.value


@dataclass
class Persona:
    tenant: Tenant
    api_key: str
    operator: User
    agent: Agent
    user_id: str
    session: Session

    def client(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.api_key}")
        return client


def make_persona(slug: str) -> Persona:
    tenant, api_key = tenant_create(actor=SYSTEM, slug=slug, name=slug.title())
    operator, _ = operator_ensure(
        actor=SYSTEM,
        tenant=tenant,
        username=f"{slug}-op",
        password="pw-" + slug,
        role=Membership.Role.MANAGER,
    )
    agent = agent_create(
        actor=SYSTEM, tenant=tenant, name=f"{slug} agent", system_prompt="Be brief."
    )
    user_id = f"{slug}-user-1"
    session = session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=user_id)
    return Persona(tenant, api_key, operator, agent, user_id, session)


def populate(persona: Persona) -> None:
    """A row in every store for the persona's tenant: a turn (messages, checkpoint), a
    memory, a summary, an audited API write, a retention policy, a storage sample, a secret,
    a tool, a webhook endpoint with an event delivered to it (one failed attempt), a
    schedule."""
    turn_run(session=persona.session, content=f"hello from {persona.tenant.slug}")
    memory_upsert(
        actor=SYSTEM,
        tenant=persona.tenant,
        user_id=persona.user_id,
        text=f"The user works at {persona.tenant.slug}.",
        source=Source("api"),
    )
    Summary.objects.create(
        tenant=persona.tenant,
        session=persona.session,
        user_id=persona.user_id,
        kind="compaction",
        first_seq=1,
        last_seq=2,
        text=f"{persona.tenant.slug} said hello",
        method="extractive",
        model="extractive",
        prompt_version="v1",
        source_tokens=10,
        summary_tokens=4,
    )
    persona.client().post("/api/v1/agents/", {"name": "audited"}, format="json")
    RetentionPolicy.objects.create(tenant=persona.tenant, message_retention_days=90)
    storage_sample(tenant=persona.tenant)
    persona.client().post("/api/v1/secrets/", {"name": "llm", "value": "s3cret"}, format="json")
    tool = {"name": f"{persona.tenant.slug}_picker", "kind": "client"}
    persona.client().post("/api/v1/tools/", tool, format="json")
    webhook = {"url": f"https://hooks.{persona.tenant.slug}.example/in", "events": [SUMMARIZED]}
    persona.client().post("/api/v1/webhooks/", webhook, format="json")
    event = event_publish(tenant_id=persona.tenant.pk, type=SUMMARIZED, data={"n": 1})
    assert event is not None
    WebhookAttempt.objects.create(
        tenant=persona.tenant, delivery=event.deliveries.get(), number=1, latency_ms=3,
        error="Could not connect.",
    )  # fmt: skip
    schedule = {"cron": "0 9 * * mon-fri", "timezone": "Europe/Lisbon", "content": "Report."}
    created = persona.client().post(
        f"/api/v1/sessions/{persona.session.pk}/schedules/", schedule, format="json"
    )
    assert created.status_code == 201, created.content


@pytest.fixture(autouse=True)
def llm() -> Iterator[ScriptedBackend]:
    """The one replaced part: the scripted LLM, reset around each test, recording what each
    call was sent."""
    scripted_backend.reset(record=True)
    yield scripted_backend
    scripted_backend.reset()


@pytest.fixture
def alice(db: None) -> Persona:
    return make_persona("alice")


@pytest.fixture
def bob(db: None) -> Persona:
    return make_persona("bob")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    """Each test starts with an empty Redis database (the suite's own, db 15)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """The test database is created and migrated by the schema's owner, as in production."""
    from django.db import connections

    rls.switch_credentials(connections["default"], dict(settings.DATABASE_OWNER))


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's set-up (as the owner), then the suite connects as the application's
    role, so every test runs under the row-level security policies. At the end: back to the
    owner, the pool closed and the connections that worker threads of async tests left idle
    ended, so the database can be dropped."""
    from django.db import connections

    connection = connections["default"]
    with django_db_blocker.unblock():
        role = rls.app_role()
        if role is not None:
            # Transactional tests are cleaned up with TRUNCATE, which production's role may
            # not run (it bypasses row-level security); only the test database grants it.
            with connection.cursor() as cursor:
                quoted = connection.ops.quote_name(role)
                cursor.execute(f"GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO {quoted}")
        rls.switch_credentials(connection, dict(settings.DATABASE_APP))
    yield
    with django_db_blocker.unblock():
        for each in connections.all():
            close_pool = getattr(each, "close_pool", None)
            if close_pool is not None:
                close_pool()
        rls.switch_credentials(connection, dict(settings.DATABASE_OWNER))
        with connection._nodb_cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [connection.settings_dict["NAME"]],
            )


@pytest.fixture(autouse=True)
def _fixtures_see_every_tenant() -> Iterator[None]:
    """Test code builds rows for several tenants and reads them back directly, so it runs
    in the cross-tenant scope. Requests, websocket connections and tasks under test set
    their own scopes inside it, exactly as in production."""
    with rls.cross_tenant(rls.CrossTenantReason.TEST_FIXTURES):
        yield
