"""Every Lua script, multi-key command and pipeline the platform sends touches one cluster
slot: recorded during real operations (turns under each double-text policy, throttled and
idempotent requests, the context and inspector reads, storage accounting, retention, the
extraction sweep, admin login failures, erasure), with the slot of every key computed."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from django.test import Client, override_settings

from agentplatform.core import keycache
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents.llm.scripted import ScriptedBackend
from agents.models import Agent
from memory.accounting import storage_sample
from memory.followups import pending_tenants_unscheduled
from tests.agents.test_concurrency import _race
from tests.cluster.recording import Recorded, recording, slots
from tests.conftest import Persona

Callbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]

pytestmark = pytest.mark.django_db(transaction=True)


def _turns(persona: Persona, policy: str, count: int) -> list[int]:
    Agent.objects.filter(pk=persona.agent.pk).update(double_text_policy=policy)
    return [status for status, _ in _race(persona, count)]


def _operate(persona: Persona, llm: ScriptedBackend) -> None:
    client, session = persona.client(), persona.session
    path = f"/api/v1/sessions/{session.pk}/messages/"
    for _ in range(2):  # the second is replayed from the idempotency record
        response = client.post(path, {"content": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert response.status_code == 201, response.content
    llm.delay = 0.02
    for policy in ("enqueue", "interrupt", "rollback", "reject"):
        assert set(_turns(persona, policy, 3)) <= {201, 409}
    assert client.get(f"/api/v1/sessions/{session.pk}/context/").status_code == 200
    storage_sample(tenant=persona.tenant)
    pending_tenants_unscheduled()
    login = Client().post("/admin/login/", {"username": "nobody", "password": "wrong"})
    assert login.status_code in (200, 429)
    erased = client.post(f"/api/v1/users/{persona.user_id}/erase/", {}, format="json")
    assert erased.status_code == 200, erased.content
    for _ in range(3):  # a kept API key: its epoch read before the lookup, then checked
        assert client.get("/api/v1/agents/").status_code == 200


@pytest.fixture
def recorded(
    alice: Persona,
    llm: ScriptedBackend,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Callbacks,
) -> Recorded:
    with recording(get_redis(), monkeypatch) as recorded:
        _operate(alice, llm)
        with django_capture_on_commit_callbacks(execute=True):  # two tenants' epochs replaced
            keycache.announce([alice.tenant.pk, uuid.uuid4()])
    return recorded


def test_every_command_script_and_pipeline_touches_one_slot(recorded: Recorded) -> None:
    operations = recorded.operations()
    assert any(name == "EVALSHA" for name, _ in operations), "the turn's scripts ran"
    assert recorded.pipelines, "the turns' write batches ran"
    spread = [(name, keys) for name, keys in operations if len(slots(keys)) > 1]
    assert spread == []


def test_every_key_of_the_platform_is_hash_tagged(recorded: Recorded, settings: Any) -> None:
    cache = f"{settings.REDIS_KEY_PREFIX}:cache".encode()
    keys = {key for _, keys in recorded.operations() for key in keys}
    untagged = [k for k in keys if not k.startswith(cache) and b"{" not in k]
    assert keys and untagged == []


def test_a_sessions_keys_share_its_slot_and_a_tenants_its_own(alice: Persona) -> None:
    session, tenant = alice.session.pk, alice.tenant.pk
    session_keys = [
        *redis_keys.session_keys(session),
        redis_keys.fence_counter(session),
        redis_keys.ticket_alive(session, "t"),
        redis_keys.ticket_alive(session, ""),  # the prefix the queue's script extends
        redis_keys.run_stop(session, 1),
        redis_keys.run_reaped(session, 1),
        redis_keys.recovery_attempts(session, "turn"),
    ]
    tenant_keys = [
        redis_keys.pending_extraction(tenant),
        redis_keys.extraction_scheduled(tenant),
        redis_keys.extraction_running(tenant),
        redis_keys.api_throttle(tenant),
        redis_keys.credentials_epoch(tenant),
    ]
    assert len(slots([k.encode() for k in session_keys])) == 1
    assert len(slots([k.encode() for k in tenant_keys])) == 1


def test_a_turns_write_batch_is_one_pipeline_per_slot_on_a_cluster(
    alice: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    with recording(get_redis(), monkeypatch) as recorded:
        _turns(alice, "reject", 1)
    # The turn's last batch holds session keys (working memory, lease) and the tenant's
    # extraction list: two pipelines here, each in one slot.
    batch = [p for p in recorded.pipelines if any(name == "EVAL" for name, _ in p)]
    tags = Counter(len(slots([k for _, keys in p for k in keys])) for p in batch)
    assert tags == Counter({1: len(batch)})
    assert len(recorded.pipelines) >= 2


def test_on_a_single_redis_the_turns_write_batch_stays_one_round_trip(
    alice: Persona, monkeypatch: pytest.MonkeyPatch, single_redis_url: str
) -> None:
    # get_redis() is evaluated once the override is in place: the single Redis's client.
    with (
        override_settings(REDIS_URL=single_redis_url),
        recording(get_redis(), monkeypatch) as recorded,
    ):
        _turns(alice, "reject", 1)
    # The turn's first batch (its accepted frame, the lease, working memory) and its last
    # (session keys and the tenant's extraction list), one pipeline each.
    assert len(recorded.pipelines) == 2
    first = [k for _, keys in recorded.pipelines[0] for k in keys]
    assert redis_keys.lease(alice.session.pk).encode() in first
    assert redis_keys.working_memory(alice.session.pk).encode() in first
    keys = [k for _, keys in recorded.pipelines[1] for k in keys]
    assert redis_keys.pending_extraction(alice.tenant.pk).encode() in keys
    assert redis_keys.lease(alice.session.pk).encode() in keys
