"""Schedules (issue: long-running agents, item 6): a session's cron schedules, their beat
rows kept in step, the fire that starts a background run, the API and the console."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from agentplatform.core import rls
from agentplatform.core.audit import SYSTEM
from agentplatform.models import AuditEvent, Tenant
from agentplatform.project.celery import app as celery_app
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Run, Schedule
from agents.schedules import schedule_create, schedule_delete, schedule_fire, schedule_update
from agents.services import session_delete
from agents.tasks import schedule_fire as schedule_fire_task
from tests.conftest import Persona

pytestmark = pytest.mark.django_db

Callbacks = Callable[..., Any]


def _schedule(persona: Persona, cron: str = "0 9 * * mon-fri", **fields: Any) -> Schedule:
    fields.setdefault("content", "Send me the daily report.")
    return schedule_create(session=persona.session, cron=cron, actor=SYSTEM, **fields)


def _beat_row(schedule: Schedule) -> PeriodicTask:
    return PeriodicTask.objects.select_related("crontab").get(pk=schedule.periodic_task_id)


def _crontab(task: PeriodicTask) -> tuple[str, ...]:
    c = task.crontab
    assert c is not None
    return (c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week, str(c.timezone))


# --- the schedule and its beat rows ----------------------------------------------------------


def test_a_schedule_gets_a_periodic_task_that_fires_it_in_its_time_zone(alice: Persona) -> None:
    schedule = _schedule(alice, "30 8 * * 1-5", timezone="Asia/Tokyo")
    task = _beat_row(schedule)
    assert (task.task, json.loads(task.args), task.enabled) == (
        "agents.schedule_fire",
        [str(schedule.pk)],
        True,
    )
    assert _crontab(task) == ("30", "8", "*", "*", "1-5", "Asia/Tokyo")
    assert "Send me" not in task.description + task.name  # no tenant data in beat's tables


def test_updating_a_schedule_updates_its_periodic_task(alice: Persona) -> None:
    schedule = _schedule(alice)
    schedule_update(
        schedule=schedule, cron="*/15 * * * *", timezone="America/New_York", actor=SYSTEM
    )
    assert _crontab(_beat_row(schedule)) == ("*/15", "*", "*", "*", "*", "America/New_York")
    schedule_update(schedule=schedule, enabled=False, actor=SYSTEM)
    assert _beat_row(schedule).enabled is False
    assert CrontabSchedule.objects.count() == 1  # updated in place, not one more per change


def test_a_schedule_takes_its_beat_rows_with_it_however_it_goes(alice: Persona) -> None:
    first, second = _schedule(alice), _schedule(alice, "0 18 * * *")
    schedule_delete(schedule=first, actor=SYSTEM)
    assert not PeriodicTask.objects.filter(pk=first.periodic_task_id).exists()
    session_delete(session=alice.session, actor=SYSTEM)  # cascades to its schedules
    assert not PeriodicTask.objects.filter(name__startswith="agents.schedule:").exists()
    assert not CrontabSchedule.objects.filter(pk=second.periodic_task.crontab_id).exists()
    assert not Schedule.objects.exists()


BAD_CRON = [
    ("61 * * * *", "61 > 59"),
    ("* * * *", "five fields"),
    ("0 0 31 2 *", "never occurs"),
    ("*/0 * * * *", "step"),
    ("0 9 * * funday", "funday"),
    ("0  9 * * *", "five fields"),
]


def test_a_bad_cron_expression_is_refused_by_name(alice: Persona) -> None:
    client = alice.client()
    for cron, problem in BAD_CRON:
        response = client.post(
            f"/api/v1/sessions/{alice.session.pk}/schedules/",
            {"cron": cron, "content": "hi"},
            format="json",
        )
        assert response.status_code == 422, (cron, response.content)
        assert response["Content-Type"] == "application/problem+json"
        errors = response.json()["errors"]
        assert [e["pointer"] for e in errors] == ["#/cron"]
        assert problem in errors[0]["detail"], (cron, errors)
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(task="agents.schedule_fire").exists()


def test_an_unknown_time_zone_or_field_is_refused(alice: Persona) -> None:
    url = f"/api/v1/sessions/{alice.session.pk}/schedules/"
    client = alice.client()
    for body, field in (
        ({"cron": "0 9 * * *", "content": "hi", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 9 * * *", "content": "hi", "timezone": "localtime"}, "timezone"),
        ({"cron": "0 9 * * *", "content": "   "}, "content"),
        ({"cron": "0 9 * * *", "content": "hi", "every": "day"}, "every"),
    ):
        response = client.post(url, body, format="json")
        assert response.status_code == 422, (body, response.content)
        assert [e["pointer"] for e in response.json()["errors"]] == [f"#/{field}"]


# --- the API --------------------------------------------------------------------------------


def test_schedules_are_created_listed_read_changed_and_deleted_through_the_api(
    alice: Persona,
) -> None:
    client = alice.client()
    body = {"cron": "0 9 * * *", "timezone": "Europe/Lisbon", "content": "Daily report.",
            "metadata": {"kind": "report"}}  # fmt: skip
    created = client.post(f"/api/v1/sessions/{alice.session.pk}/schedules/", body, format="json")
    assert created.status_code == 201, created.content
    schedule = created.json()
    assert created["Location"] == f"/api/v1/schedules/{schedule['id']}/"
    assert {k: schedule[k] for k in body} == body
    assert schedule["enabled"] is True and schedule["session"] == str(alice.session.pk)
    # Beat's next tick: 09:00 in Lisbon, whatever the server's clock zone.
    next_run = datetime.fromisoformat(schedule["next_run_at"]).astimezone(ZoneInfo("Europe/Lisbon"))
    assert (next_run.hour, next_run.minute) == (9, 0)
    assert timezone.now() < next_run < timezone.now() + timedelta(days=1, hours=1)

    listed = client.get(f"/api/v1/sessions/{alice.session.pk}/schedules/?page_size=1")
    assert [s["id"] for s in listed.json()["results"]] == [schedule["id"]]
    url = f"/api/v1/schedules/{schedule['id']}/"
    assert client.get(url).json()["cron"] == "0 9 * * *"

    changed = client.patch(url, {"enabled": False, "cron": "15 7 * * sat"}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["enabled"], changed.json()["next_run_at"]) == (False, None)
    row = Schedule.objects.get(pk=schedule["id"])
    assert _beat_row(row).enabled is False
    assert _crontab(_beat_row(row))[:5] == ("15", "7", "*", "*", "sat")

    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404
    assert not PeriodicTask.objects.filter(pk=row.periodic_task_id).exists()
    actions = AuditEvent.objects.filter(tenant=alice.tenant, action__startswith="schedule.")
    assert list(actions.order_by("id").values_list("action", "actor_kind")) == [
        ("schedule.created", "api_key"),
        ("schedule.updated", "api_key"),
        ("schedule.deleted", "api_key"),
    ]


def test_another_tenants_schedules_are_not_found(alice: Persona, bob: Persona) -> None:
    schedule = _schedule(alice)
    client = bob.client()
    url = f"/api/v1/schedules/{schedule.pk}/"
    assert client.get(url).status_code == 404
    assert client.patch(url, {"enabled": False}, format="json").status_code == 404
    assert client.delete(url).status_code == 404
    session_url = f"/api/v1/sessions/{alice.session.pk}/schedules/"
    assert client.get(session_url).status_code == 404
    # 404 before the body is looked at: a bad body tells nothing about the session either.
    assert client.post(session_url, {"cron": "x"}, format="json").status_code == 404
    good = {"cron": "* * * * *", "content": "mine now"}
    assert client.post(session_url, good, format="json").status_code == 404
    schedule.refresh_from_db()
    assert schedule.enabled and Schedule.objects.count() == 1


# --- firing ---------------------------------------------------------------------------------


def test_a_fire_starts_a_background_run_that_a_worker_finishes(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks: Callbacks
) -> None:
    llm.script(Step(reply="Here is your report."))
    schedule = _schedule(alice, metadata={"kind": "report"})
    with django_capture_on_commit_callbacks(execute=True):
        run_id = schedule_fire_task.apply(args=[str(schedule.pk)]).get()
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.background, run.content) == (
        "completed",
        True,
        "Send me the daily report.",
    )
    assert run.metadata == {"kind": "report", "schedule": str(schedule.pk)}
    assert run.session_id == alice.session.pk and run.tenant_id == alice.tenant.pk
    schedule.refresh_from_db()
    assert schedule.last_run_id == run.pk and schedule.last_fired_at is not None


def test_a_disabled_deleted_or_repeated_fire_starts_nothing(alice: Persona) -> None:
    schedule = _schedule(alice)
    assert schedule_fire(schedule_id=schedule.pk, fire_id="tick-1") is not None
    assert schedule_fire(schedule_id=schedule.pk, fire_id="tick-1") is None  # redelivered
    schedule_update(schedule=schedule, enabled=False, actor=SYSTEM)
    assert schedule_fire(schedule_id=schedule.pk, fire_id="tick-2") is None
    schedule_update(schedule=schedule, enabled=True, actor=SYSTEM)
    Tenant.objects.filter(pk=alice.tenant.pk).update(status=Tenant.Status.SUSPENDED)
    assert schedule_fire(schedule_id=schedule.pk, fire_id="tick-3") is None
    schedule_id = schedule.pk
    schedule_delete(schedule=schedule, actor=SYSTEM)
    assert schedule_fire_task.apply(args=[str(schedule_id)]).get() is None
    assert schedule_fire_task.apply(args=["not-an-id"]).get() is None
    assert Run.objects.filter(session=alice.session).count() == 1


# --- beat -----------------------------------------------------------------------------------


def test_beats_tables_have_no_tenant_column_and_no_row_level_security() -> None:
    """Beat reads them for every tenant with no scope: they must stay outside the policies,
    and the schedule (content, metadata) inside them."""
    protected = {table for table, _ in rls.protected_tables()}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relkind = 'r' "
            "AND relname LIKE 'django_celery_beat_%%'"
        )
        beat_tables = dict(cursor.fetchall())
    assert "django_celery_beat_periodictask" in beat_tables
    assert not set(beat_tables) & protected
    assert not any(beat_tables.values())
    assert Schedule._meta.db_table in protected


@pytest.mark.django_db(transaction=True)
def test_beats_database_scheduler_loads_the_schedule_with_no_tenant_scope(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks: Callbacks
) -> None:
    every_minute = _schedule(alice, "* * * * *", timezone="Asia/Kolkata")
    # A daily one at the current hour of a far time zone: django-celery-beat loads crontab
    # tasks only within a few hours of theirs, adjusted for the zone.
    tokyo_hour = timezone.now().astimezone(ZoneInfo("Asia/Tokyo")).hour
    daily = _schedule(alice, f"0 {tokyo_hour} * * *", timezone="Asia/Tokyo")
    disabled = _schedule(alice, "* * * * *", enabled=False)
    PeriodicTask.objects.filter(pk=every_minute.periodic_task_id).update(
        last_run_at=timezone.now() - timedelta(minutes=2)
    )
    with rls.request_scope():  # what a beat process has: no tenant at all
        scheduler = DatabaseScheduler(app=celery_app)
        entries = scheduler.schedule
        entry = entries[f"agents.schedule:{every_minute.pk}"]
        assert (entry.task, entry.args) == ("agents.schedule_fire", [str(every_minute.pk)])
        assert str(entry.schedule.tz) == "Asia/Kolkata"
        assert entry.is_due().is_due
        assert f"agents.schedule:{daily.pk}" in entries
        assert f"agents.schedule:{disabled.pk}" not in entries
        llm.script(Step(reply="Every minute."))
        with django_capture_on_commit_callbacks(execute=True):
            scheduler.apply_entry(entry)  # beat's send: eager here, so the worker's part runs
    run = Run.objects.get(session=alice.session)
    assert run.status == "completed" and run.metadata["schedule"] == str(every_minute.pk)


# --- the console ----------------------------------------------------------------------------


def _console(persona: Persona) -> Any:
    from django.test import Client

    client = Client()
    client.force_login(persona.operator)
    return client


def test_managers_add_change_and_delete_schedules_in_the_console_through_the_services(
    alice: Persona,
) -> None:
    client = _console(alice)
    form = {"session": str(alice.session.pk), "cron": "0 6 * * *", "timezone": "Europe/Paris",
            "content": "Morning digest.", "metadata": "{}", "enabled": "on"}  # fmt: skip
    added = client.post(reverse("admin:agents_schedule_add"), form)
    assert added.status_code == 302, added.content.decode()[:2000]
    schedule = Schedule.objects.get(tenant=alice.tenant)
    assert _crontab(_beat_row(schedule)) == ("0", "6", "*", "*", "*", "Europe/Paris")
    change = reverse("admin:agents_schedule_change", args=[schedule.pk])
    assert client.get(change).status_code == 200
    changed = client.post(change, {**form, "cron": "0 7 * * *", "enabled": ""})
    assert changed.status_code == 302, changed.content.decode()[:2000]
    assert _beat_row(schedule).enabled is False and _crontab(_beat_row(schedule))[1] == "7"
    bad = client.post(change, {**form, "cron": "0 25 * * *"})
    assert bad.status_code == 200 and "Not a valid cron expression" in bad.content.decode()
    deleted = client.post(reverse("admin:agents_schedule_delete", args=[schedule.pk]),
                          {"post": "yes"})  # fmt: skip
    assert deleted.status_code == 302
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(pk=schedule.periodic_task_id).exists()
    events = AuditEvent.objects.filter(tenant=alice.tenant, action__startswith="schedule.")
    assert list(events.order_by("id").values_list("action", "actor_id")) == [
        ("schedule.created", str(alice.operator.pk)),
        ("schedule.updated", str(alice.operator.pk)),
        ("schedule.deleted", str(alice.operator.pk)),
    ]


def test_the_console_offers_no_other_tenants_session(alice: Persona, bob: Persona) -> None:
    client = _console(alice)
    form = {"session": str(bob.session.pk), "cron": "0 6 * * *", "timezone": "UTC",
            "content": "Planted.", "metadata": "{}", "enabled": "on"}  # fmt: skip
    response = client.post(reverse("admin:agents_schedule_add"), form)
    assert response.status_code == 200  # the form refuses the choice
    assert not Schedule.objects.exists()
