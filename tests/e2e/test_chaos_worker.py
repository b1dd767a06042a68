"""Chaos: a Celery worker is SIGKILLed in the middle of a session summary. The task, acked
late, is delivered again to a new worker, and runs to one summary (it is idempotent)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from agentplatform.devtools.testing import Worker
from agentplatform.infra.redis import get_redis
from agentplatform.project.celery import app as celery_app
from agents.engine.turn import turn_run
from memory.models import Summary
from memory.tasks import summarize_session
from tests.conftest import Persona

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]
SLOW_SUMMARY = " ".join(f"point{i}" for i in range(60))  # 60 deltas x 0.1 s: killable


def _worker() -> Worker:
    return Worker(
        {"CELERY_VISIBILITY_TIMEOUT": "3", "SCRIPTED_LLM_DELAY": "0.1",
         "SCRIPTED_LLM_REPLY": SLOW_SUMMARY}
    )  # fmt: skip


@pytest.fixture
def queued_tasks() -> Iterator[None]:
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = True


def _wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_a_worker_killed_mid_summary_is_replaced_and_the_task_runs_once(
    alice: Persona, llm: object, queued_tasks: None
) -> None:
    for content in ("My name is Ada.", "I live in Lisbon.", "Thanks!"):
        turn_run(session=alice.session, content=content)
    first = _worker()
    try:
        summarize_session.delay(str(alice.session.pk))
        # The worker reserved the task (unacknowledged: acks_late) and streams the summary.
        unacked = f"{settings.REDIS_KEY_PREFIX}:celery:unacked"
        assert _wait(lambda: get_redis().hlen(unacked) >= 1, 60), "no worker took the task"
        time.sleep(1)  # a second into the 6-second summary
        assert not Summary.objects.filter(session=alice.session).exists()
    finally:
        first.kill()
    second = _worker()
    try:
        written = _wait(
            lambda: Summary.objects.filter(session=alice.session, kind="session").exists(), 60
        )
        assert written, "the task was not delivered again after its worker died"
        time.sleep(1)
        assert Summary.objects.filter(session=alice.session, kind="session").count() == 1
    finally:
        second.kill()
