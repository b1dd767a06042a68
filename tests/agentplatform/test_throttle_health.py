from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from rest_framework.settings import api_settings

from agentplatform.http.throttling import TenantRateThrottle
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "tenant": "3/min"}
    monkeypatch.setattr(TenantRateThrottle, "THROTTLE_RATES", rates)


def test_a_tenant_over_its_rate_gets_429_and_others_do_not(
    alice: Persona, bob: Persona, three_per_minute: None
) -> None:
    client = alice.client()
    statuses = [client.get("/api/v1/agents/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    throttled = client.get("/api/v1/agents/")
    assert throttled["Content-Type"] == "application/problem+json"
    assert "Retry-After" in throttled
    assert bob.client().get("/api/v1/agents/").status_code == 200


def test_throttle_counters_live_in_redis(
    alice: Persona, three_per_minute: None, redis_client
) -> None:
    alice.client().get("/api/v1/agents/")
    keys = [key.decode() for key in redis_client.keys("*throttle*")]
    assert any(str(alice.tenant.pk) in key for key in keys)


def test_healthz_answers_without_dependencies() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_postgres_and_redis() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}


def test_readyz_says_which_dependency_is_down() -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"] != "ok"


def test_a_tenants_own_rate_replaces_the_platform_rate(
    alice: Persona, bob: Persona, three_per_minute: None
) -> None:
    alice.tenant.api_rate = "5/min"
    alice.tenant.save(update_fields=["api_rate"])
    client = alice.client()
    statuses = [client.get("/api/v1/agents/").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    bob_statuses = [bob.client().get("/api/v1/agents/").status_code for _ in range(4)]
    assert bob_statuses == [200, 200, 200, 429]


def test_only_the_platforms_operators_set_a_tenants_rate(alice: Persona) -> None:
    manager = Client()
    manager.force_login(alice.operator)
    page = manager.get(f"/admin/agentplatform/tenant/{alice.tenant.pk}/change/")
    assert page.status_code == 200
    assert 'name="api_rate"' not in page.content.decode()
    superuser = User.objects.create_superuser("root-rate", password="pw")
    admin = Client()
    admin.force_login(superuser)
    page = admin.get(f"/admin/agentplatform/tenant/{alice.tenant.pk}/change/")
    assert 'name="api_rate"' in page.content.decode()


def test_concurrent_requests_never_overspend_a_budget() -> None:
    """The check and the spend are one atomic step: 40 requests racing on 8 threads for a
    budget of 10 let exactly 10 through (the old read-modify-write let races through)."""
    from concurrent.futures import ThreadPoolExecutor

    from agentplatform.http.throttling import _SPEND
    from agentplatform.infra import redis_keys

    key = redis_keys.api_throttle("race")
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: int(_SPEND([key], [6000, 60000])), range(40)))
    assert waits.count(0) == 10
    assert all(0 < wait <= 6000 for wait in waits if wait)
