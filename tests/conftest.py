"""Personas shared by every test module: two tenants, each with an operator, an API key,
an agent, an end user and a session (Healthchecks' style)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from agentplatform.models import Membership, Tenant
from agentplatform.services import operator_ensure, tenant_create
from agents.models import Agent, Session
from agents.services import agent_create, session_open


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
    tenant, api_key = tenant_create(slug=slug, name=slug.title())
    operator, _ = operator_ensure(
        tenant=tenant, username=f"{slug}-op", password="pw-" + slug, role=Membership.Role.MANAGER
    )
    agent = agent_create(tenant=tenant, name=f"{slug} agent", system_prompt="Be brief.")
    user_id = f"{slug}-user-1"
    session = session_open(tenant=tenant, agent=agent, user_id=user_id)
    return Persona(tenant, api_key, operator, agent, user_id, session)


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


@pytest.fixture(scope="session", autouse=True)
def _release_test_database(django_db_setup: None, django_db_blocker) -> Iterator[None]:
    """Before pytest-django drops the test database, close the connection pool and end the
    connections that worker threads of async tests (consumers) left idle, which would
    otherwise keep the database "in use"."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        name = connections["default"].settings_dict["NAME"]
        for connection in connections.all():
            close_pool = getattr(connection, "close_pool", None)
            if close_pool is not None:
                close_pool()
        with connections["default"]._nodb_cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
