"""Retention policies: data of known ages, the daily task, exactly what should go is gone;
the admin's preview counts the same before anything is saved; storage accounting and the
admin index charts; erasure from the admin."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agentplatform.core.audit import SYSTEM
from agentplatform.infra import redis_keys
from agentplatform.models import AuditEvent
from agents.engine.turn import turn_run
from agents.llm.scripted import ScriptedBackend
from agents.models import Agent, Message, Run, Session
from agents.services import session_open
from memory.accounting import storage_sample
from memory.models import Checkpoint, Memory, RetentionPolicy, StorageSample, Summary
from memory.retention import retention_preview
from memory.semantic import Source, memory_upsert
from memory.tasks import enforce_retention
from tests.conftest import Persona

pytestmark = pytest.mark.django_db
NOW = timezone.now()


def _days_ago(days: float) -> datetime.datetime:
    return NOW - datetime.timedelta(days=days)


def _aged_session(persona: Persona, user_id: str, turns: int, age_days: float) -> Session:
    session = session_open(
        actor=SYSTEM, tenant=persona.tenant, agent=persona.agent, user_id=user_id
    )
    session = Session.objects.select_related("agent").get(pk=session.pk)
    for index in range(turns):
        turn_run(session=session, content=f"{user_id} message {index}")
    Message.objects.filter(session=session).update(created_at=_days_ago(age_days))
    Run.objects.filter(session=session).update(created_at=_days_ago(age_days))
    Session.objects.filter(pk=session.pk).update(last_activity_at=_days_ago(age_days))
    return session


@pytest.fixture
def aged(alice: Persona, llm: ScriptedBackend) -> dict[str, Session]:
    old = _aged_session(alice, "old-user", turns=3, age_days=40)
    recent = _aged_session(alice, "recent-user", turns=3, age_days=2)
    # Checkpoints of the recent session: one on each of the last three days, four today.
    for index, checkpoint in enumerate(
        Checkpoint.objects.filter(session=recent).order_by("created_at")
    ):
        checkpoint.created_at = _days_ago(3 - index)
        checkpoint.save(update_fields=["created_at"])
    for index in range(4):
        turn_run(session=recent, content=f"more {index}")
    stale = memory_upsert(
        actor=SYSTEM,
        tenant=alice.tenant,
        user_id="old-user",
        text="The user likes tea.",
        source=Source("api"),
    )
    Memory.objects.filter(pk=stale[0].pk).update(updated_at=_days_ago(400))
    memory_upsert(actor=SYSTEM, tenant=alice.tenant, user_id="recent-user",
                  text="The user likes jazz.", source=Source("api"))  # fmt: skip
    return {"old": old, "recent": recent}


def test_the_daily_run_deletes_exactly_what_the_policy_says(
    alice: Persona, bob: Persona, aged: dict[str, Session]
) -> None:
    bob_messages = Message.objects.filter(tenant=bob.tenant).count()
    policy = RetentionPolicy.objects.create(
        tenant=alice.tenant,
        idle_session_days=30,
        message_retention_days=30,
        checkpoint_keep_last=2,
        memory_retention_days=365,
    )
    recent_checkpoints = list(
        Checkpoint.objects.filter(session=aged["recent"]).order_by("-created_at")
    )
    assert len(recent_checkpoints) == 7
    # Beyond the last two, today's others would be thinned; an unfinished turn's must stay.
    open_one, thinned = recent_checkpoints[2], recent_checkpoints[3]
    Checkpoint.objects.filter(pk=open_one.pk).update(turn_open=True)
    preview = retention_preview(policy=policy)

    result = enforce_retention()

    old, recent = aged["old"], aged["recent"]
    old.refresh_from_db()
    assert old.status == "archived"
    assert not Message.objects.filter(session=old).exists()  # older than 30 days: gone
    assert Summary.objects.filter(session=old, kind="session").exists()  # its summary stays
    assert Message.objects.filter(session=recent).count() == 14  # recent: untouched
    kept = set(Checkpoint.objects.filter(session=recent).values_list("pk", flat=True))
    # The last two, the open one, and one for each earlier day: only `thinned` went.
    assert kept == {c.pk for c in recent_checkpoints} - {thinned.pk}
    # The old session's three checkpoints were all written today: the newest two stay.
    assert Checkpoint.objects.filter(session=old).count() == 2
    assert result["checkpoints"] == preview.checkpoints == 2
    assert not Memory.objects.filter(text="The user likes tea.").exists()
    assert Memory.objects.filter(text="The user likes jazz.").exists()
    assert Message.objects.filter(tenant=bob.tenant).count() == bob_messages
    assert (preview.sessions_archived, preview.messages, preview.memories) == (1, 6, 1)
    assert result["messages"] == 6 and result["sessions_archived"] == 1
    # The old session's three runs kept their messages' text: gone too; the recent stay.
    assert preview.runs == result["runs"] == 3
    assert not Run.objects.filter(session=old).exists()
    assert Run.objects.filter(session=recent).count() == 7
    event = AuditEvent.objects.get(action="retention.enforced")
    assert event.payload["messages"] == 6 and event.tenant_id == alice.tenant.pk


def test_the_admin_previews_a_policy_without_saving_it(
    alice: Persona, aged: dict[str, Session]
) -> None:
    client = Client()
    client.force_login(alice.operator)
    form = {
        "tenant": str(alice.tenant.pk),
        "agent": "",
        "message_retention_days": "30",
        "idle_session_days": "30",
        "preview_only": "on",
    }
    page = client.post(reverse("admin:memory_retentionpolicy_add"), form)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="retention-preview"' in html
    assert "<td>6</td>" in html and "<td>1</td>" in html
    assert not RetentionPolicy.objects.exists()
    assert Message.objects.filter(session=aged["old"]).count() == 6

    form.pop("preview_only")
    form["working_memory_ttl_seconds"] = "600"
    saved = client.post(reverse("admin:memory_retentionpolicy_add"), form)
    assert saved.status_code == 302
    assert RetentionPolicy.objects.filter(tenant=alice.tenant).exists()
    assert Agent.objects.get(pk=alice.agent.pk).working_memory_ttl_seconds == 600
    event = AuditEvent.objects.get(action="admin.add")
    assert event.actor_kind == "operator" and event.payload["model"] == "memory.RetentionPolicy"


def test_an_agent_override_falls_back_to_the_default_field_by_field(
    alice: Persona, aged: dict[str, Session]
) -> None:
    RetentionPolicy.objects.create(tenant=alice.tenant, message_retention_days=30)
    override = RetentionPolicy(tenant=alice.tenant, agent=alice.agent, idle_session_days=30)
    preview = retention_preview(policy=override)
    assert (preview.messages, preview.sessions_archived) == (6, 1)


def test_storage_is_sampled_per_store_and_charted_on_the_admin_index(
    alice: Persona, bob: Persona, llm: ScriptedBackend, redis_client
) -> None:
    turn_run(session=alice.session, content="hello")
    samples = {s.store: s for s in storage_sample(tenant=alice.tenant)}
    assert set(samples) >= {"messages", "summaries", "memories", "checkpoints", "redis"}
    assert samples["messages"].rows == 2 and samples["messages"].bytes > 0
    assert samples["checkpoints"].rows == 1
    assert samples["redis"].rows >= 2 and samples["redis"].bytes > 0  # working memory, frames
    storage_sample(tenant=alice.tenant)  # the same day again: replaced, not doubled
    assert StorageSample.objects.filter(tenant=alice.tenant, store="messages").count() == 1

    client = Client()
    client.force_login(alice.operator)
    html = client.get(reverse("admin:index")).content.decode()
    assert 'id="console-charts"' in html
    assert html.count('<figure class="console-chart">') == 4
    assert "Turns per day" in html and "Storage (all stores)" in html


def test_erasing_end_users_from_the_admin_leaves_nothing(
    alice: Persona, llm: ScriptedBackend, redis_client
) -> None:
    turn_run(session=alice.session, content="My name is Ada.")
    other = session_open(
        actor=SYSTEM, tenant=alice.tenant, agent=alice.agent, user_id="someone-else"
    )
    turn_run(session=Session.objects.select_related("agent").get(pk=other.pk), content="hi")
    client = Client()
    client.force_login(alice.operator)
    changelist = reverse("admin:agents_session_changelist")
    selection = {"action": "erase_end_users", "_selected_action": [str(alice.session.pk)]}
    confirm = client.post(changelist, selection)
    assert confirm.status_code == 200 and alice.user_id in confirm.content.decode()
    assert Message.objects.filter(session=alice.session).exists()  # not before confirming

    done = client.post(changelist, {**selection, "confirm": "yes"})
    assert done.status_code == 302
    for model in (Session, Summary, Memory):
        assert not model.objects.filter(user_id=alice.user_id).exists(), model
    for model in (Message, Checkpoint):
        assert not model.objects.filter(session__user_id=alice.user_id).exists(), model
    assert not list(redis_client.scan_iter(match=redis_keys.session_prefix(alice.session.pk)))
    assert Message.objects.filter(session=other).count() == 2  # the other end user stays
    event = AuditEvent.objects.get(action="user.erase")
    assert event.actor_kind == "operator"
