"""API keys kept in the process's memory (agentplatform.core.keycache): a kept key costs no
SQL, and every change of its tenant or of its keys, in this process or another, reaches it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.connection
from django.contrib.postgres.fields import ArrayField
from django.db import connection, transaction
from django.db.models import JSONField
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from agentplatform.core import keycache, rls, services
from agentplatform.core.audit import SYSTEM
from agentplatform.core.services import api_key_authenticate, api_key_revoke
from agentplatform.devtools.testing import free_port
from agentplatform.http.authentication import ApiKeyAuthentication
from agentplatform.http.permissions import IsTenant
from agentplatform.http.throttling import TenantRateThrottle
from agentplatform.infra import redis as redis_module
from agentplatform.infra import redis_keys
from agentplatform.models import ApiKey, Tenant
from tests.conftest import Persona

pytestmark = pytest.mark.django_db

Callbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


@pytest.fixture(autouse=True)
def _nothing_kept() -> Iterator[None]:
    keycache.forget_all()
    yield
    keycache.forget_all()


def _statements(raw: str) -> tuple[ApiKey | None, int]:
    """Authenticate `raw` as a request would (outside any tenant's scope); with the number
    of SQL statements it took."""
    with (
        rls.cross_tenant(rls.CrossTenantReason.COMMAND, "test"),
        CaptureQueriesContext(connection) as queries,
    ):
        key = api_key_authenticate(raw)
    return key, len(queries)


def _kept(persona: Persona) -> ApiKey:
    """The persona's key, kept: its first use teaches its tenant, the second keeps it."""
    _statements(persona.api_key)
    key, _ = _statements(persona.api_key)
    assert key is not None
    return key


def _key_row(persona: Persona) -> ApiKey:
    return ApiKey.objects.get(tenant=persona.tenant)


def test_a_kept_key_costs_no_sql_and_a_new_one_does(alice: Persona) -> None:
    first, first_statements = _statements(alice.api_key)
    second, _ = _statements(alice.api_key)
    third, third_statements = _statements(alice.api_key)
    assert first is not None and second is not None and third is not None
    assert first_statements >= 1
    assert third_statements == 0
    assert third.pk == first.pk and third.tenant.pk == alice.tenant.pk


def test_each_request_gets_its_own_instances(alice: Persona) -> None:
    _kept(alice)
    one, _ = _statements(alice.api_key)
    two, _ = _statements(alice.api_key)
    assert one is not None and two is not None
    assert one is not two and one.tenant is not two.tenant
    one.tenant.status = Tenant.Status.SUSPENDED  # a request's own change stays its own
    assert two.tenant.status == Tenant.Status.ACTIVE
    assert _statements(alice.api_key)[0] is not None


def test_a_wrong_secret_under_a_kept_prefix_is_refused(alice: Persona) -> None:
    _kept(alice)
    prefix = alice.api_key.split("_")[1]
    assert _statements(f"ap_{prefix}_wrong-secret")[0] is None


def test_a_change_announced_by_another_process_is_seen_at_once(
    alice: Persona, redis_client: redis.Redis
) -> None:
    """Another process revokes the key: the row changes under this process's feet, then that
    process replaces the tenant's epoch. Until it did, the kept key is used (the window
    API_KEY_CACHE_SECONDS bounds); once it did, the key is read again, and refused."""
    _kept(alice)
    with rls.tenant_scope(alice.tenant.pk), connection.cursor() as cursor:
        cursor.execute("UPDATE agentplatform_apikey SET revoked_at = now() WHERE tenant_id = %s",
                       [alice.tenant.pk])  # fmt: skip
    assert _statements(alice.api_key)[0] is not None
    redis_client.set(redis_keys.credentials_epoch(alice.tenant.pk), "another process's")
    key, statements = _statements(alice.api_key)
    assert key is None and statements >= 1


def test_a_lost_epoch_reads_the_key_again(alice: Persona, redis_client: redis.Redis) -> None:
    _kept(alice)
    redis_client.delete(redis_keys.credentials_epoch(alice.tenant.pk))  # Redis lost its data
    key, statements = _statements(alice.api_key)
    assert key is not None and statements >= 1
    assert _statements(alice.api_key)[1] == 0  # kept again, under a new epoch


def test_a_key_kept_longer_than_the_setting_is_read_again(alice: Persona, settings: Any) -> None:
    _kept(alice)
    settings.API_KEY_CACHE_SECONDS = 0
    assert _statements(alice.api_key)[1] >= 1
    assert _statements(alice.api_key)[1] >= 1


def _revoke(persona: Persona) -> None:
    api_key_revoke(actor=SYSTEM, key=_key_row(persona))


def _revoke_by_update(persona: Persona) -> None:
    ApiKey.objects.filter(tenant=persona.tenant).update(revoked_at=timezone.now())


def _suspend_by_update(persona: Persona) -> None:
    # update() sends no post_save: the queryset announces it (an operator's bulk change).
    Tenant.objects.filter(pk=persona.tenant.pk).update(status=Tenant.Status.SUSPENDED)


def _suspend_by_save(persona: Persona) -> None:
    tenant = Tenant.objects.get(pk=persona.tenant.pk)  # as the console's form saves it
    tenant.status = Tenant.Status.SUSPENDED
    tenant.save()


def _delete(persona: Persona) -> None:
    _key_row(persona).delete()


@pytest.mark.parametrize(
    "change", [_revoke, _revoke_by_update, _suspend_by_update, _suspend_by_save, _delete]
)
def test_a_committed_change_replaces_the_epoch_and_refuses_the_kept_key(
    alice: Persona,
    django_capture_on_commit_callbacks: Callbacks,
    redis_client: redis.Redis,
    change: Callable[[Persona], None],
) -> None:
    _kept(alice)
    epoch = redis_client.get(redis_keys.credentials_epoch(alice.tenant.pk))
    with django_capture_on_commit_callbacks(execute=True):
        change(alice)
    assert redis_client.get(redis_keys.credentials_epoch(alice.tenant.pk)) != epoch
    assert _statements(alice.api_key)[0] is None


def test_a_change_that_rolls_back_announces_nothing(
    alice: Persona, django_capture_on_commit_callbacks: Callbacks, redis_client: redis.Redis
) -> None:
    _kept(alice)
    epoch = redis_client.get(redis_keys.credentials_epoch(alice.tenant.pk))
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        Tenant.objects.filter(pk=alice.tenant.pk).update(name="renamed")
        raise RuntimeError("rolled back")
    assert callbacks == []
    assert redis_client.get(redis_keys.credentials_epoch(alice.tenant.pk)) == epoch


def test_recording_use_reaches_the_kept_copy(alice: Persona) -> None:
    """A key kept with an old last_used_at is touched once, not on every request."""
    _statements(alice.api_key)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    ApiKey.objects.filter(tenant=alice.tenant).update(last_used_at=an_hour_ago)
    _statements(alice.api_key)  # kept with the old value, and touched
    assert _key_row(alice).last_used_at > an_hour_ago  # type: ignore[operator]
    assert _statements(alice.api_key)[1] == 0


def test_one_tenants_change_leaves_anothers_kept_keys(
    alice: Persona, bob: Persona, django_capture_on_commit_callbacks: Callbacks
) -> None:
    _kept(alice)
    _kept(bob)
    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(actor=SYSTEM, key=_key_row(alice))
    assert _statements(alice.api_key)[0] is None
    key, statements = _statements(bob.api_key)
    assert key is not None and key.tenant.pk == bob.tenant.pk and statements == 0


def test_over_rest_a_kept_key_sees_only_its_tenant(alice: Persona, bob: Persona) -> None:
    for _ in range(3):
        assert alice.client().get(f"/api/v1/sessions/{alice.session.pk}/").status_code == 200
        assert bob.client().get(f"/api/v1/sessions/{alice.session.pk}/").status_code == 404
        assert bob.client().get(f"/api/v1/sessions/{bob.session.pk}/").status_code == 200


def test_the_epoch_is_read_before_the_lookup_it_guards(
    alice: Persona, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> None:
    """Another process revokes the key and replaces the epoch right after this process read
    the key's row: the key is kept under the epoch read before, which no longer holds, so
    the next request reads the key again and is refused. (Read after the lookup, the epoch
    would be the new one, and the revoked key would be served from memory.)"""
    _statements(alice.api_key)  # the tenant is learnt
    lookup = services._key_with_tenant

    def lookup_then_revoked_elsewhere(prefix: str) -> ApiKey | None:
        key = lookup(prefix)
        with rls.tenant_scope(alice.tenant.pk), connection.cursor() as cursor:
            cursor.execute("UPDATE agentplatform_apikey SET revoked_at = now()")
        redis_client.set(redis_keys.credentials_epoch(alice.tenant.pk), "after the lookup")
        return key

    monkeypatch.setattr(services, "_key_with_tenant", lookup_then_revoked_elsewhere)
    assert _statements(alice.api_key)[0] is not None  # read before the revocation
    monkeypatch.setattr(services, "_key_with_tenant", lookup)
    assert _statements(alice.api_key)[0] is None


def test_a_kept_key_older_than_the_setting_is_read_again(alice: Persona) -> None:
    _kept(alice)
    prefix = alice.api_key.split("_")[1]
    kept = keycache._kept[prefix]
    keycache._kept[prefix] = replace(kept, kept_at=kept.kept_at - 61)  # the default is 60 s
    assert _statements(alice.api_key)[1] >= 1
    assert _statements(alice.api_key)[1] == 0  # kept anew


def test_a_kept_key_is_the_row_the_orm_loads(alice: Persona) -> None:
    _kept(alice)
    key, statements = _statements(alice.api_key)
    assert key is not None and statements == 0
    assert _field_values(key) == _field_values(_key_row(alice))
    assert _field_values(key.tenant) == _field_values(Tenant.objects.get(pk=alice.tenant.pk))


def test_kept_values_cannot_be_shared_mutable_objects() -> None:
    """Each request gets instances built from the kept values, not copies of them: a field
    holding a mutable value (JSON, an array) would be shared between requests and threads."""
    mutable = (JSONField, ArrayField)
    for model in (ApiKey, Tenant):
        assert not [f.name for f in model._meta.concrete_fields if isinstance(f, mutable)]


def test_with_redis_unreachable_keys_are_read_from_postgresql(
    alice: Persona, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _kept(alice)
    unreachable = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    monkeypatch.setattr(keycache, "get_redis", lambda: unreachable)
    key, statements = _statements(alice.api_key)
    assert key is not None and statements >= 1
    monkeypatch.setattr(redis_module, "get_redis", lambda: unreachable)  # the batch's client
    with caplog.at_level(logging.ERROR, logger="agentplatform.core.keycache"):
        keycache._replace_epochs({str(alice.tenant.pk)})
    assert "could not announce a credentials change" in caplog.text


def _field_values(obj: ApiKey | Tenant) -> dict[str, object]:
    return {field.attname: getattr(obj, field.attname) for field in obj._meta.concrete_fields}


# --- over REST: the kept key's check rides with the throttle's spend --------------------------


@pytest.fixture
def three_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "tenant": "3/min"}
    monkeypatch.setattr(TenantRateThrottle, "THROTTLE_RATES", rates)


def test_over_rest_a_kept_key_costs_no_round_trip_of_its_own(
    alice: Persona, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """As many Redis round trips as a request whose key is looked up in PostgreSQL (the
    throttle's script checks the epoch), and no lookup."""
    sent: list[int] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(1)  # one packed send: one round trip
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)

    def request() -> tuple[int, list[str]]:
        sent.clear()
        with CaptureQueriesContext(connection) as queries:
            assert alice.client().get("/api/v1/agents/").status_code == 200
        lookups = [q["sql"] for q in queries if "agentplatform_api_key_credential" in q["sql"]]
        return len(sent), lookups

    settings.API_KEY_CACHE_SECONDS = 0
    request()  # the throttle's script loaded into Redis's cache (a fresh Redis: NOSCRIPT)
    round_trips, lookups = request()
    assert lookups
    settings.API_KEY_CACHE_SECONDS = 60
    request(), request()  # learn the tenant, keep the key
    assert request() == (round_trips, [])


def test_over_rest_a_stale_kept_key_spends_nothing_before_it_is_read_again(
    alice: Persona, three_per_minute: None, redis_client: redis.Redis
) -> None:
    client = alice.client()
    statuses = [client.get("/api/v1/agents/").status_code for _ in range(2)]
    redis_client.set(redis_keys.credentials_epoch(alice.tenant.pk), "another process's")
    statuses += [client.get("/api/v1/agents/").status_code for _ in range(2)]
    assert statuses == [200, 200, 200, 429]  # the stale check spent none of the three


def test_over_rest_a_wrong_secret_under_a_kept_prefix_spends_nothing(
    alice: Persona, three_per_minute: None
) -> None:
    client = alice.client()
    statuses = [client.get("/api/v1/agents/").status_code for _ in range(2)]
    prefix = alice.api_key.split("_")[1]
    assert _get_with(f"ap_{prefix}_wrong-secret") == 401
    statuses += [client.get("/api/v1/agents/").status_code for _ in range(2)]
    assert statuses == [200, 200, 200, 429]


def _get_with(raw: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client.get("/api/v1/agents/").status_code


def test_over_rest_a_change_announced_by_another_process_refuses_the_kept_key(
    alice: Persona, redis_client: redis.Redis
) -> None:
    client = alice.client()
    assert [client.get("/api/v1/agents/").status_code for _ in range(2)] == [200, 200]
    with rls.tenant_scope(alice.tenant.pk), connection.cursor() as cursor:
        cursor.execute("UPDATE agentplatform_apikey SET revoked_at = now()")
    assert client.get("/api/v1/agents/").status_code == 200  # kept, not announced yet
    redis_client.set(redis_keys.credentials_epoch(alice.tenant.pk), "another process's")
    assert client.get("/api/v1/agents/").status_code == 401


def test_over_rest_a_deleted_epoch_spends_nothing_and_reads_the_key_again(
    alice: Persona, three_per_minute: None, redis_client: redis.Redis
) -> None:
    """Deleting the tenant's epoch is how an operator forces every process to read again."""
    client = alice.client()
    statuses = [client.get("/api/v1/agents/").status_code for _ in range(2)]
    redis_client.delete(redis_keys.credentials_epoch(alice.tenant.pk))
    statuses += [client.get("/api/v1/agents/").status_code for _ in range(2)]
    assert statuses == [200, 200, 200, 429]


def test_over_rest_a_kept_key_over_its_budget_gets_429_with_retry_after(
    alice: Persona, three_per_minute: None
) -> None:
    client = alice.client()
    assert [client.get("/api/v1/agents/").status_code for _ in range(3)] == [200, 200, 200]
    throttled = client.get("/api/v1/agents/")  # a kept key: its check spent the budget
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) >= 1


def test_over_rest_a_key_revoked_while_throttled_gets_401_not_429(
    alice: Persona, three_per_minute: None, redis_client: redis.Redis
) -> None:
    """The script checks the epoch before the budget: a stale key is never answered 429."""
    client = alice.client()
    assert [client.get("/api/v1/agents/").status_code for _ in range(4)] == [200, 200, 200, 429]
    with rls.tenant_scope(alice.tenant.pk), connection.cursor() as cursor:
        cursor.execute("UPDATE agentplatform_apikey SET revoked_at = now()")
    redis_client.set(redis_keys.credentials_epoch(alice.tenant.pk), "another process's")
    assert client.get("/api/v1/agents/").status_code == 401


def test_a_wrong_secret_under_a_kept_prefix_costs_no_round_trip(
    alice: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kept(alice)
    sent: list[int] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(1)
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    prefix = alice.api_key.split("_")[1]
    key, statements = _statements(f"ap_{prefix}_wrong-secret")
    assert key is None and statements == 0 and sent == []


def test_every_api_view_has_the_throttle_the_key_check_spends_for() -> None:
    """A kept key's check spends the tenant's budget when the request authenticates
    (throttling.Prepaid): right only while every view taking API keys answers to exactly
    that throttle and lets every tenant principal through."""
    views = [view for view in _views(get_resolver().url_patterns) if _takes_api_keys(view)]
    assert views
    odd = [
        name
        for name, settings in views
        if list(settings["throttle_classes"]) != [TenantRateThrottle]
        or list(settings["permission_classes"]) != [IsTenant]
    ]
    assert odd == []


def _views(patterns: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each DRF view's name and its classes as it runs: its own, or as_view()'s arguments."""
    names = ("authentication_classes", "throttle_classes", "permission_classes")
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern.url_patterns)
        elif isinstance(pattern, URLPattern) and hasattr(pattern.callback, "cls"):
            view, given = pattern.callback.cls, getattr(pattern.callback, "initkwargs", {})
            yield view.__name__, {name: given.get(name, getattr(view, name)) for name in names}


def _takes_api_keys(view: tuple[str, dict[str, Any]]) -> bool:
    return ApiKeyAuthentication in view[1]["authentication_classes"]
