"""Schedules: a session's cron schedules, each starting a background run when it is due.

Beat (django-celery-beat's DatabaseScheduler) fires them from its own tables: every
schedule has one PeriodicTask (task `agents.schedule_fire`, args `[schedule id]`) with one
CrontabSchedule in the schedule's time zone. The services write the schedule and those two
rows in one transaction, so beat never sees a schedule the API does not (or the other way
round). Those tables have no tenant column: beat reads them across tenants without a scope,
and they hold nothing of a tenant's but the expression and its time zone (the content and
metadata stay on the schedule, under row-level security). However a schedule goes (its
service, its session, agent or tenant deleted, an end user erased), `_periodic_task_remove`
takes its beat rows with it, in the same transaction.

A fire (`schedule_fire`) enters the schedule's tenant scope (the task does) and starts a run
through `agents.runs.run_create`, as the API does; a schedule disabled or deleted since beat
read it starts nothing.
"""

from __future__ import annotations

import json
import uuid
import zoneinfo
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone as django_timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from agentplatform.core.audit import Actor, audit_delete, audit_record, audited, unaudited
from agentplatform.models import Tenant
from agents.cron import cron_fields
from agents.entry import content_validate
from agents.errors import ContentInvalid
from agents.models import Run, Schedule, Session
from agents.runs import run_create

# The task of agents.tasks, named rather than imported: a service never imports a transport.
FIRE_TASK = "agents.schedule_fire"
SCHEDULE_EDITABLE = ("cron", "timezone", "content", "metadata", "enabled")


@audited("schedule.created")
@transaction.atomic
def schedule_create(
    *,
    session: Session,
    cron: str,
    content: str,
    timezone: str = "UTC",
    metadata: dict[str, Any] | None = None,
    enabled: bool = True,
    actor: Actor,
) -> Schedule:
    """A new schedule of the session, with its periodic task (beat picks it up within
    seconds: the task's save marks beat's schedule as changed)."""
    schedule = Schedule(
        tenant_id=session.tenant_id,
        session=session,
        cron=cron,
        timezone=timezone,
        content=content,
        metadata=metadata or {},
        enabled=enabled,
    )
    _clean(schedule)
    schedule.periodic_task = _periodic_task_sync(schedule)
    schedule.save()
    _audit(schedule, "schedule.created", actor, session=str(session.pk))
    return schedule


@audited("schedule.updated")
@transaction.atomic
def schedule_update(*, schedule: Schedule, actor: Actor, **fields: Any) -> Schedule:
    """Change the schedule (any of SCHEDULE_EDITABLE) and its periodic task with it."""
    for name, value in fields.items():
        if name not in SCHEDULE_EDITABLE:
            raise ValueError(f"{name} is not editable")
        setattr(schedule, name, value)
    _clean(schedule)
    _periodic_task_sync(schedule)
    schedule.save()
    _audit(schedule, "schedule.updated", actor, fields=sorted(fields))
    return schedule


@audited("schedule.deleted")
def schedule_delete(*, schedule: Schedule, actor: Actor) -> None:
    """Delete the schedule; its periodic task goes with it (`_periodic_task_remove`)."""
    payload = {"session": str(schedule.session_id), "cron": schedule.cron}
    audit_delete(schedule, actor=actor, action="schedule.deleted", payload=payload)


@unaudited("a schedule starting its run: the run is the record, its metadata names the schedule")
def schedule_fire(*, schedule_id: uuid.UUID | str, fire_id: str = "") -> Run | None:
    """Beat's tick for one schedule, in its tenant's scope: a background run on its session
    with its content. Nothing when the schedule was deleted or disabled since beat read it,
    its tenant is suspended, or this tick (`fire_id`, the Celery message's id) already
    started a run: a redelivered message is not a second tick."""
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update(of=("self",))
            .select_related("session__agent", "tenant")
            .filter(pk=schedule_id)
            .first()
        )
        if schedule is None or not schedule.enabled:
            return None
        if schedule.tenant.status != Tenant.Status.ACTIVE:
            return None
        if fire_id and schedule.last_fire_id == fire_id:
            return None
        metadata = {**schedule.metadata, "schedule": str(schedule.pk)}
        run = run_create(session=schedule.session, content=schedule.content, metadata=metadata)
        Schedule.objects.filter(pk=schedule.pk).update(
            last_run=run, last_fired_at=django_timezone.now(), last_fire_id=fire_id[:64]
        )
    return run


# --- the beat side ------------------------------------------------------------------------


def _clean(schedule: Schedule) -> None:
    """The model's checks (cron, time zone, sizes), and the content as a run would take it:
    a ValidationError naming the field, which the API answers as a 422."""
    schedule.full_clean(exclude=["periodic_task", "last_run"], validate_unique=False)
    try:
        content_validate(schedule.content)
    except ContentInvalid as error:
        raise ValidationError({"content": [str(error)]}) from None


def _periodic_task_sync(schedule: Schedule) -> PeriodicTask:
    """Create or update the schedule's crontab and periodic task to match it."""
    task: PeriodicTask | None = schedule.periodic_task if schedule.periodic_task_id else None
    crontab = task.crontab if task is not None and task.crontab else CrontabSchedule()
    for name, value in cron_fields(schedule.cron).items():
        setattr(crontab, name, value)
    crontab.timezone = zoneinfo.ZoneInfo(schedule.timezone)
    crontab.save()
    if task is None:
        task = PeriodicTask(
            name=f"agents.schedule:{schedule.pk}",
            task=FIRE_TASK,
            args=json.dumps([str(schedule.pk)]),
        )
    task.crontab = crontab
    task.enabled = schedule.enabled
    task.description = f"agents.Schedule {schedule.pk}"  # ids only: no tenant data here
    task.save()
    return task


@receiver(post_delete, sender=Schedule, dispatch_uid="agents.schedules.periodic_task_remove")
def _periodic_task_remove(sender: type[Schedule], instance: Schedule, **_: Any) -> None:
    # Every way a schedule is deleted passes here (a queryset delete and a cascade from its
    # session, agent or tenant send post_delete per row), inside the deleting transaction.
    crontabs = PeriodicTask.objects.filter(pk=instance.periodic_task_id).values("crontab_id")
    CrontabSchedule.objects.filter(pk__in=crontabs).delete()  # cascades to the periodic task
    PeriodicTask.objects.filter(pk=instance.periodic_task_id).delete()


def _audit(schedule: Schedule, action: str, actor: Actor, **extra: Any) -> None:
    # The expression and switches, never the content or metadata (the tenant's data).
    payload = {"cron": schedule.cron, "timezone": schedule.timezone,
               "enabled": schedule.enabled, **extra}  # fmt: skip
    audit_record(
        tenant=Tenant(pk=schedule.tenant_id), actor=actor, action=action, target=schedule,
        payload=payload,
    )  # fmt: skip
