from __future__ import annotations

import pytest
from django.db.models import Q

from agentplatform.core.audit import SYSTEM
from agentplatform.models import AuditEvent, IdempotencyRecord
from agents.engine.turn import turn_run
from agents.models import Message, Session
from agents.services import session_open
from memory.models import Checkpoint, Memory, Summary
from tests.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)


def test_erase_removes_the_user_from_every_store_and_nothing_else(
    alice: Persona, bob: Persona, redis_client
) -> None:
    session = Session.objects.select_related("agent").get(pk=alice.session.pk)
    alice.client().post(
        f"/api/v1/sessions/{session.pk}/messages/",
        {"content": "My name is Ada."},
        format="json",
        HTTP_IDEMPOTENCY_KEY="erase-me",
    )
    turn_run(session=session, content="I live in Lisbon.")
    other = session_open(
        actor=SYSTEM, tenant=alice.tenant, agent=alice.agent, user_id="someone-else"
    )
    turn_run(
        session=Session.objects.select_related("agent").get(pk=other.pk), content="My name is Zoe."
    )
    turn_run(
        session=Session.objects.select_related("agent").get(pk=bob.session.pk),
        content="My name is Ada.",
    )
    assert Memory.objects.filter(tenant=alice.tenant, user_id=alice.user_id).count() == 2

    response = alice.client().post(f"/api/v1/users/{alice.user_id}/erase/")
    assert response.status_code == 200
    receipt = response.json()
    assert receipt["sessions"] == 1 and receipt["messages"] == 4 and receipt["memories"] == 2
    assert receipt["checkpoints"] == 2 and receipt["idempotency_records"] == 1
    assert receipt["redis_keys"] >= 2

    assert not Session.objects.filter(tenant=alice.tenant, user_id=alice.user_id).exists()
    assert not Message.objects.filter(session_id=session.pk).exists()
    assert not Checkpoint.objects.filter(session_id=session.pk).exists()
    assert not Summary.objects.filter(tenant=alice.tenant, user_id=alice.user_id).exists()
    assert not Memory.objects.filter(tenant=alice.tenant, user_id=alice.user_id).exists()
    assert not IdempotencyRecord.objects.filter(Q(path__contains=str(session.pk))).exists()
    assert [k for k in redis_client.keys("*") if str(session.pk).encode() in k] == []
    for event in AuditEvent.objects.all():
        assert "Ada" not in str(event.payload) and alice.user_id not in str(event.payload)
    assert AuditEvent.objects.filter(tenant=alice.tenant, action="user.erase").exists()

    # Everyone else is untouched.
    assert Memory.objects.filter(tenant=alice.tenant, user_id="someone-else").count() == 1
    assert Memory.objects.filter(tenant=bob.tenant, user_id=bob.user_id).count() == 1
    assert Message.objects.filter(session=bob.session).count() == 2


def test_erase_is_scoped_to_the_callers_tenant(alice: Persona, bob: Persona) -> None:
    turn_run(
        session=Session.objects.select_related("agent").get(pk=alice.session.pk),
        content="My name is Ada.",
    )
    receipt = bob.client().post(f"/api/v1/users/{alice.user_id}/erase/").json()
    assert receipt["sessions"] == 0 and receipt["memories"] == 0
    assert Session.objects.filter(pk=alice.session.pk).exists()


def test_per_end_user_tasks_keep_no_result_in_the_backend() -> None:
    from memory import tasks

    for task in (
        tasks.extract_memories,
        tasks.extract_pending,
        tasks.compact_session,
        tasks.summarize_session,
    ):
        assert task.ignore_result, task.name
