"""After-turn work leaves the turn's path: one Celery message per burst of turns, nothing
lost when a task is (memory/followups.py). The broker here is the suite's real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from agentplatform.infra import redis_keys
from agentplatform.project.celery import app as celery_app
from agentplatform.project.celery_queues import QUEUE_NAMES
from agents.engine.turn import turn_run
from agents.llm.scripted import ScriptedBackend
from agents.models import Message
from memory.followups import compaction_request
from memory.models import Memory
from memory.tasks import compact_session, extract_pending, extract_pending_sweep
from tests.conftest import Persona

# The Redis lists of every queue (agentplatform/project/celery_queues.py).
BROKER_QUEUES = [f"{settings.REDIS_KEY_PREFIX}:celery:{name}" for name in QUEUE_NAMES]


@pytest.fixture
def queued_tasks() -> Iterator[None]:
    """Send tasks to the broker instead of running them in the test's process."""
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = True


def _broker_tasks(redis_client: redis.Redis) -> list[tuple[str, list]]:
    messages = [
        json.loads(raw) for queue in BROKER_QUEUES for raw in redis_client.lrange(queue, 0, -1)
    ]
    return [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages]


def _pending(redis_client: redis.Redis, persona: Persona) -> list[int]:
    return [
        int(x) for x in redis_client.lrange(redis_keys.pending_extraction(persona.tenant.pk), 0, -1)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_turns_sends_one_extraction_task_and_loses_no_message(
    alice: Persona, llm: ScriptedBackend, redis_client: redis.Redis, queued_tasks: None
) -> None:
    for content in ["My name is Ada.", "I live in Lisbon.", "I love hiking."]:
        turn_run(session=alice.session, content=content)

    tasks = _broker_tasks(redis_client)
    assert [name for name, _ in tasks] == ["memory.extract_pending"]
    user_ids = list(
        Message.objects.filter(session=alice.session, role="user")
        .order_by("seq")
        .values_list("pk", flat=True)
    )
    assert _pending(redis_client, alice) == user_ids
    assert not Memory.objects.exists()

    assert extract_pending(str(alice.tenant.pk)) == 3  # what the worker runs
    assert sorted(Memory.objects.values_list("text", flat=True)) == [
        "The user lives in Lisbon.",
        "The user loves hiking.",
        "The user's name is Ada.",
    ]
    assert _pending(redis_client, alice) == []
    assert not redis_client.exists(redis_keys.extraction_scheduled(alice.tenant.pk))

    turn_run(session=alice.session, content="I prefer green tea.")  # the flag was cleared
    assert [name for name, _ in _broker_tasks(redis_client)].count("memory.extract_pending") == 2


@pytest.mark.django_db(transaction=True)
def test_a_lost_extraction_task_is_rescheduled_by_the_sweep(
    alice: Persona,
    bob: Persona,
    llm: ScriptedBackend,
    redis_client: redis.Redis,
    queued_tasks: None,
) -> None:
    turn_run(session=alice.session, content="My name is Ada.")
    turn_run(session=bob.session, content="What time is it?")
    redis_client.delete(*BROKER_QUEUES)  # the worker died with the task
    redis_client.delete(redis_keys.extraction_scheduled(alice.tenant.pk))  # and its flag expired
    bob_flag_kept = redis_client.exists(redis_keys.extraction_scheduled(bob.tenant.pk))

    assert extract_pending_sweep() == 1  # alice's tenant only: bob's task is still queued
    assert bob_flag_kept
    assert _broker_tasks(redis_client) == [
        ("memory.extract_pending", repr((str(alice.tenant.pk),)))
    ]
    extract_pending(str(alice.tenant.pk))
    assert list(Memory.objects.values_list("text", "tenant")) == [
        ("The user's name is Ada.", alice.tenant.pk)
    ]


@pytest.mark.django_db(transaction=True)
def test_extraction_waits_while_another_run_drains_the_tenant(
    alice: Persona, llm: ScriptedBackend, redis_client: redis.Redis, queued_tasks: None
) -> None:
    turn_run(session=alice.session, content="My name is Ada.")
    redis_client.delete(*BROKER_QUEUES)
    redis_client.set(redis_keys.extraction_running(alice.tenant.pk), "1")

    assert extract_pending(str(alice.tenant.pk)) == 0
    assert len(_pending(redis_client, alice)) == 1  # left for the run that comes back
    assert [name for name, _ in _broker_tasks(redis_client)] == ["memory.extract_pending"]


@pytest.mark.django_db(transaction=True)
def test_compaction_is_queued_once_until_it_ran(
    alice: Persona, redis_client: redis.Redis, queued_tasks: None
) -> None:
    compaction_request(alice.session.pk, 1, 8)
    compaction_request(alice.session.pk, 1, 10)
    assert [name for name, _ in _broker_tasks(redis_client)] == ["memory.compact_session"]

    compact_session(str(alice.session.pk), 1, 8)  # nothing to summarise here; still clears
    compaction_request(alice.session.pk, 1, 10)
    assert [name for name, _ in _broker_tasks(redis_client)].count("memory.compact_session") == 2
