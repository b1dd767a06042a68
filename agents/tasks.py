"""Celery tasks of the agents app."""

from __future__ import annotations

from celery import Task, shared_task

from agentplatform.core import rls
from agents import runs, schedules
from agents.engine.recovery import turns_recover
from agents.models import Run, Schedule


@shared_task(name="agents.recover_turns")
def recover_turns() -> int:
    """Beat: finish turns cut off between LLM calls whose lease expired."""
    return turns_recover()  # each turn in its tenant's scope


@shared_task(name="agents.run_execute")
def run_execute(run_id: str) -> str | None:
    """A background run (or one resumed after its actions), in its tenant's scope."""
    tenant_id = rls.tenant_of(Run, run_id)
    if tenant_id is None:
        return None
    with rls.tenant_scope(tenant_id):
        return runs.run_execute(run_id)


@shared_task(name="agents.expire_runs")
def expire_runs() -> int:
    """Beat: settle runs whose wait for an action ran out, and pick up runs a dead process
    left in progress."""
    return runs.runs_expire() + runs.runs_reap()


@shared_task(name="agents.schedule_fire", bind=True)
def schedule_fire(self: Task, schedule_id: str) -> str | None:
    """Beat: a schedule is due. Its run starts in its tenant's scope; a schedule deleted
    meanwhile starts nothing. The message's id makes a redelivery a no-op."""
    tenant_id = rls.tenant_of(Schedule, schedule_id)
    if tenant_id is None:
        return None
    with rls.tenant_scope(tenant_id):
        run = schedules.schedule_fire(schedule_id=schedule_id, fire_id=self.request.id or "")
    return None if run is None else str(run.pk)
