"""Schedules across real processes: a `celery beat` process with the database scheduler,
connected as the application's role (bound by row-level security, with no tenant scope),
finds a due schedule in django-celery-beat's tables and sends its fire; a worker process
starts the schedule's run in its tenant's scope and finishes it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from agentplatform.core.audit import SYSTEM
from agentplatform.devtools.testing import Beat, Worker, wait_until
from agents.models import Message, Run, Schedule
from agents.schedules import schedule_create
from tests.conftest import Persona

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_beat_fires_a_due_schedule_and_a_worker_runs_it(alice: Persona) -> None:
    schedule = schedule_create(
        session=alice.session, cron="* * * * *", content="Status report, please.", actor=SYSTEM
    )
    # Last fired two minutes ago: due at once, rather than at the next whole minute.
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(
        last_run_at=timezone.now() - timedelta(minutes=2)
    )
    env = {"SCRIPTED_LLM_REPLY": "All systems nominal."}
    worker, beat = Worker(env), Beat(env)
    try:
        fired = Schedule.objects.filter(pk=schedule.pk, last_run__status="completed")
        wait_until(fired.exists, what="beat to fire and the worker to run it", timeout=60)
    finally:
        beat.stop()
        worker.stop()
    run = Run.objects.get(session=alice.session)
    assert run.background and run.metadata == {"schedule": str(schedule.pk)}
    reply = Message.objects.get(pk=run.assistant_message_id)
    assert reply.content == "All systems nominal."
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).total_run_count >= 1
