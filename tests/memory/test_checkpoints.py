from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from agentplatform.core import rls
from agentplatform.core.audit import SYSTEM
from agentplatform.models import AuditEvent
from agents.engine.turn import turn_run
from agents.llm.scripted import ScriptedBackend
from agents.models import Message, Session
from agents.services import agent_create
from memory.models import Checkpoint, Memory
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _session(persona: Persona) -> Session:
    return Session.objects.select_related("agent").get(pk=persona.session.pk)


def _turns(persona: Persona, *contents: str) -> list:
    session = _session(persona)
    return [turn_run(session=session, content=text) for text in contents]


def test_the_checkpoint_timeline_lists_and_reads(alice: Persona, bob: Persona) -> None:
    results = _turns(alice, "one", "two")
    listed = alice.client().get(f"/api/v1/sessions/{alice.session.pk}/checkpoints/").json()
    ids = [c["id"] for c in listed["results"]]
    assert ids == [str(results[1].checkpoint.id), str(results[0].checkpoint.id)]
    one = alice.client().get(f"/api/v1/checkpoints/{ids[1]}/").json()
    assert one["high_water_seq"] == 2 and one["parent"] is None
    assert alice.client().get(f"/api/v1/checkpoints/{ids[0]}/").json()["parent"] == ids[1]
    assert bob.client().get(f"/api/v1/checkpoints/{ids[0]}/").status_code == 404
    assert bob.client().get(f"/api/v1/sessions/{alice.session.pk}/checkpoints/").status_code == 404


def test_rollback_keeps_later_messages_as_rolled_back_and_the_next_turn_ignores_them(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        first, _ = _turns(alice, "I live in Lisbon.", "I love jazz.")
    assert Memory.objects.filter(tenant=alice.tenant, status="active").count() == 2
    response = alice.client().post(
        f"/api/v1/sessions/{alice.session.pk}/rollback/",
        {"checkpoint": str(first.checkpoint.id)},
        format="json",
    )
    assert response.status_code == 200, response.json()
    receipt = response.json()
    assert receipt["rolled_back_seqs"] == [3, 4]
    assert len(receipt["retracted_memories"]) == 1
    statuses = dict(Message.objects.filter(session=alice.session).values_list("seq", "status"))
    assert statuses == {1: "active", 2: "active", 3: "rolled_back", 4: "rolled_back"}
    assert Memory.objects.get(pk=receipt["retracted_memories"][0]).status == "retracted"
    _turns(alice, "What do I love?")
    seen = [m.content for m in llm.calls[-1]]
    assert "I love jazz." not in seen and "I live in Lisbon." in seen
    assert not any("jazz" in text for text in seen)
    listed = alice.client().get(f"/api/v1/sessions/{alice.session.pk}/messages/").json()
    assert [m["status"] for m in listed["results"]][2:4] == ["rolled_back", "rolled_back"]
    assert AuditEvent.objects.filter(tenant=alice.tenant, action="session.rollback").exists()
    from agents.live import frames_after

    frames = [json.loads(text) for _, text in frames_after(alice.session.pk, 0)]
    rollback = next(f for f in frames if f["type"] == "rollback")
    assert rollback["checkpoint"] == str(first.checkpoint.id) and rollback["high_water_seq"] == 2


def test_fork_starts_an_independent_session_from_the_checkpoint(
    alice: Persona, llm: ScriptedBackend
) -> None:
    first, _ = _turns(alice, "alpha", "beta")
    response = alice.client().post(
        f"/api/v1/sessions/{alice.session.pk}/fork/",
        {"checkpoint": str(first.checkpoint.id)},
        format="json",
    )
    assert response.status_code == 201
    fork = Session.objects.select_related("agent").get(pk=response.json()["id"])
    assert list(fork.messages.order_by("seq").values_list("content", flat=True)) == [
        "alpha",
        "You said: alpha",
    ]
    turn_run(session=fork, content="gamma")
    assert [m.content for m in llm.calls[-1]][-1] == "gamma"
    assert "beta" not in [m.content for m in llm.calls[-1]]
    assert alice.session.messages.count() == 4  # the original is untouched


@pytest.mark.parametrize("path", ["rollback", "fork"])
def test_another_tenant_cannot_roll_back_or_fork(alice: Persona, bob: Persona, path: str) -> None:
    (first,) = _turns(alice, "one")
    checkpoint = str(first.checkpoint.id)
    foreign = bob.client().post(
        f"/api/v1/sessions/{alice.session.pk}/{path}/", {"checkpoint": checkpoint}, format="json"
    )
    assert foreign.status_code == 404
    # Bob's own session with Alice's checkpoint id is just as unknown.
    mixed = bob.client().post(
        f"/api/v1/sessions/{bob.session.pk}/{path}/", {"checkpoint": checkpoint}, format="json"
    )
    assert mixed.status_code == 404
    assert Session.objects.filter(tenant=bob.tenant).count() == 1


def test_a_checkpoint_of_another_session_is_404(alice: Persona) -> None:
    (first,) = _turns(alice, "one")
    other = Session.objects.create(tenant=alice.tenant, agent=alice.agent, user_id="x")
    response = alice.client().post(
        f"/api/v1/sessions/{other.pk}/rollback/",
        {"checkpoint": str(first.checkpoint.id)},
        format="json",
    )
    assert response.status_code == 404


def test_checkpoints_store_references_not_copies(alice: Persona) -> None:
    """A checkpoint names the history by seq: its row does not grow with the history (the
    fifth turn's checkpoint is as small as the first's), and holds none of its text."""
    _turns(alice, *[f"message {i} " + "word " * 50 for i in range(5)])
    checkpoints = list(Checkpoint.objects.filter(session=alice.session).order_by("created_at"))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_size(c.*) FROM memory_checkpoint c WHERE id = ANY(%s)"
            " ORDER BY created_at",
            [[c.pk for c in checkpoints]],
        )
        sizes = [size for (size,) in cursor.fetchall()]
    assert len(sizes) == 5 and checkpoints[-1].high_water_seq == 10
    assert sizes[-1] - sizes[0] < 64, sizes  # ~1,300 characters of history later
    for checkpoint in checkpoints:
        row = Checkpoint.objects.filter(pk=checkpoint.pk).values().get()
        assert "word" not in json.dumps(row, default=str)


def _around_the_trigger(sql: str, pk: int) -> None:
    """What only the schema's owner can do: switch the append-only trigger off."""
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE agentplatform_auditevent DISABLE TRIGGER USER")
    with rls.as_owner(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE agentplatform_auditevent DISABLE TRIGGER USER")
        cursor.execute(sql, [pk])
        cursor.execute("ALTER TABLE agentplatform_auditevent ENABLE TRIGGER USER")


@pytest.mark.django_db(transaction=True)  # the owner's connection must see the events
def test_the_audit_chain_verifies_and_detects_tampering(alice: Persona, bob: Persona) -> None:
    for index in range(3):  # events come from services, as in production
        agent_create(tenant=alice.tenant, name=f"chained {index}", actor=SYSTEM)
    agent_create(tenant=bob.tenant, name="bob's", actor=SYSTEM)
    out = StringIO()
    call_command("verify_audit", stdout=out, stderr=StringIO())
    assert "All audit chains verify" in out.getvalue()

    victim = AuditEvent.objects.filter(tenant=alice.tenant).order_by("id")[1]
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=victim.pk).update(action="test.forged")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=victim.pk).delete()

    _around_the_trigger(
        "UPDATE agentplatform_auditevent SET payload = '{\"i\": 99}' WHERE id = %s", victim.pk
    )
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit", stdout=out, stderr=StringIO())
    assert f"at event {victim.pk}: the event was altered" in out.getvalue()
    assert "bob" not in out.getvalue() and str(bob.tenant.pk) not in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_deleted_event_breaks_the_chain(alice: Persona) -> None:
    for index in range(3):
        agent_create(tenant=alice.tenant, name=f"chained {index}", actor=SYSTEM)
    # Chained, as beat does within seconds (a pending event is covered by its payload
    # digest only: deleted before it is chained, it leaves no gap).
    call_command("verify_audit", stdout=StringIO(), stderr=StringIO())
    events = list(AuditEvent.objects.filter(tenant=alice.tenant).order_by("id"))
    _around_the_trigger("DELETE FROM agentplatform_auditevent WHERE id = %s", events[-2].pk)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit", stdout=out, stderr=StringIO())
    assert f"at event {events[-1].pk}: an event before it is missing" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_an_edited_field_or_a_reordered_chain_is_found(alice: Persona) -> None:
    for index in range(4):
        agent_create(tenant=alice.tenant, name=f"chained {index}", actor=SYSTEM)
    call_command("verify_audit", stdout=StringIO(), stderr=StringIO())
    events = list(AuditEvent.objects.filter(tenant=alice.tenant).order_by("chain_seq"))
    _around_the_trigger(
        "UPDATE agentplatform_auditevent SET action = 'agent.forged' WHERE id = %s", events[1].pk
    )
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit", stdout=out, stderr=StringIO())
    assert f"at event {events[1].pk}: the event was altered" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_two_events_swapped_in_the_chain_are_found(alice: Persona) -> None:
    for index in range(3):
        agent_create(tenant=alice.tenant, name=f"chained {index}", actor=SYSTEM)
    call_command("verify_audit", stdout=StringIO(), stderr=StringIO())
    *_, first, second = AuditEvent.objects.filter(tenant=alice.tenant).order_by("chain_seq")
    place = "UPDATE agentplatform_auditevent SET chain_seq = %s WHERE id = %s"
    for seq, event in [(-1, first), (first.chain_seq, second), (second.chain_seq, first)]:
        _around_the_trigger(place.replace("%s", str(seq), 1), event.pk)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit", stdout=out, stderr=StringIO())
    assert f"at event {second.pk}: an event before it is missing" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_pending_event_with_an_edited_payload_is_found(alice: Persona) -> None:
    call_command("verify_audit", stdout=StringIO(), stderr=StringIO())
    agent_create(tenant=alice.tenant, name="pending", actor=SYSTEM)
    victim = AuditEvent.objects.filter(tenant=alice.tenant).order_by("id").last()
    assert victim is not None and victim.pending
    _around_the_trigger(
        "UPDATE agentplatform_auditevent SET payload = '{\"i\": 99}' WHERE id = %s", victim.pk
    )
    out = StringIO()
    with pytest.raises(CommandError):  # chained with its stored digest, which no longer fits
        call_command("verify_audit", stdout=out, stderr=StringIO())
    assert f"at event {victim.pk}: the event was altered" in out.getvalue()


def test_api_writes_are_audited_once_with_the_key(alice: Persona) -> None:
    before = AuditEvent.objects.filter(tenant=alice.tenant).count()
    alice.client().post("/api/v1/agents/", {"name": "audited"}, format="json")
    alice.client().post("/api/v1/secrets/", {"name": "k", "value": "v"}, format="json")
    alice.client().post(f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "hi"},
                        format="json")  # fmt: skip
    events = AuditEvent.objects.filter(tenant=alice.tenant).order_by("id")[before:]
    # One event per action (the secret's used to be recorded twice); a turn is the
    # conversation itself, kept as messages and checkpoints, not an audit event.
    assert [e.action for e in events] == ["agent.created", "secret.set"]
    assert {e.actor_kind for e in events} == {"api_key"}
    assert {e.actor_id for e in events} == {alice.api_key.split("_")[1]}
