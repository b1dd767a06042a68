"""The audit chain is built after the write: writers only insert, one chainer links.

The tampering cases (an edit, a deletion found by `verify_audit`) are in
tests/memory/test_checkpoints.py, next to the services whose events they tamper with.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextvars import copy_context
from io import StringIO
from itertools import pairwise

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client

from agentplatform.core import rls
from agentplatform.core.audit import (
    GENESIS,
    SYSTEM,
    audit_chain,
    audit_record,
    audit_verify,
)
from agentplatform.models import AuditEvent
from agentplatform.tasks import audit_chain as audit_chain_task
from agents.services import agent_create
from tests.conftest import Persona


def _events(persona: Persona) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=persona.tenant).order_by("id"))


def _chain() -> int:
    with rls.cross_tenant(rls.CrossTenantReason.AUDIT_CHAINING, "test"):
        return audit_chain()


@pytest.mark.django_db
def test_an_event_is_written_pending_and_the_chainer_links_it_in_id_order(
    alice: Persona, bob: Persona
) -> None:
    _chain()  # the fixtures' own events
    for index in range(3):
        agent_create(tenant=alice.tenant, name=f"a{index}", actor=SYSTEM)
    agent_create(tenant=bob.tenant, name="b", actor=SYSTEM)
    fresh = [event for event in _events(alice) if event.pending]
    assert len(fresh) == 3
    assert {(e.chain_seq, e.prev_hash, e.hash) for e in fresh} == {(None, None, None)}

    assert _chain() == 4
    chained = _events(alice)
    assert [e.chain_seq for e in chained] == list(range(1, len(chained) + 1))
    assert chained[0].prev_hash == GENESIS
    for before, after in pairwise(chained):
        assert after.prev_hash == before.hash
    assert [found for _, found in audit_verify()] == [None, None]  # alice's chain, bob's
    assert _chain() == 0  # nothing left: safe to run twice


@pytest.mark.django_db
def test_the_beat_task_chains_in_the_cross_tenant_scope(alice: Persona, bob: Persona) -> None:
    agent_create(tenant=alice.tenant, name="a", actor=SYSTEM)
    agent_create(tenant=bob.tenant, name="b", actor=SYSTEM)
    with rls.tenant_scope(alice.tenant.pk):  # beat's tasks start in no tenant's scope
        assert audit_chain_task() >= 2
    assert not AuditEvent.objects.filter(chain_seq__isnull=True).exists()


@pytest.mark.django_db
def test_the_trigger_lets_only_a_pending_event_be_linked_once(alice: Persona) -> None:
    agent_create(tenant=alice.tenant, name="a", actor=SYSTEM)
    pending = _events(alice)[-1]
    with pytest.raises(DatabaseError), transaction.atomic():  # linking and editing at once
        AuditEvent.objects.filter(pk=pending.pk).update(
            chain_seq=99, prev_hash=GENESIS, hash="f" * 64, action="test.forged"
        )
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=pending.pk).update(action="test.forged")
    _chain()
    with pytest.raises(DatabaseError), transaction.atomic():  # relinking a linked event
        AuditEvent.objects.filter(pk=pending.pk).update(hash="f" * 64)


@pytest.fixture
def other_thread() -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=10)


def _in_thread(threads: list[threading.Thread], target: object) -> None:
    def run() -> None:
        try:
            target()  # type: ignore[operator]
        finally:
            connection.close()

    context = copy_context()  # the row-level security scope goes along
    thread = threading.Thread(target=context.run, args=(run,))
    threads.append(thread)
    thread.start()


@pytest.mark.django_db(transaction=True)  # two connections, each committing its own
def test_writers_of_one_tenant_never_wait_for_each_other_nor_for_the_chainer(
    alice: Persona, other_thread: list[threading.Thread]
) -> None:
    written, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with transaction.atomic():
            audit_record(tenant=alice.tenant, actor=SYSTEM, action="test.slow")
            written.set()
            release.wait(timeout=10)

    _in_thread(other_thread, slow_writer)
    assert written.wait(timeout=10)
    with connection.cursor() as cursor:  # were there a per-tenant lock, this would time out
        cursor.execute("SET lock_timeout = '2s'")
    try:
        fast = audit_record(tenant=alice.tenant, actor=SYSTEM, action="test.fast")
        assert _chain() >= 1  # links what is committed; the slow event is not yet
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
        release.set()
    other_thread[0].join(timeout=10)

    slow = AuditEvent.objects.get(tenant=alice.tenant, action="test.slow")
    assert slow.pk < fast.pk and slow.pending  # a lower id, committed later
    assert _chain() == 1
    slow.refresh_from_db()
    fast.refresh_from_db()
    assert slow.chain_seq == fast.chain_seq + 1 and slow.prev_hash == fast.hash  # type: ignore[operator]
    out = StringIO()
    call_command("verify_audit", stdout=out, stderr=StringIO())
    assert "All audit chains verify" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_two_chainers_at_once_build_one_chain(
    alice: Persona, other_thread: list[threading.Thread]
) -> None:
    for index in range(50):
        audit_record(tenant=alice.tenant, actor=SYSTEM, action=f"test.{index}")
    results: list[int] = []
    _in_thread(other_thread, lambda: results.append(_chain()))
    results.append(_chain())
    other_thread[0].join(timeout=10)
    assert sum(results) >= 50
    seqs = [event.chain_seq for event in _events(alice)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(found is None for _, found in audit_verify())


@pytest.mark.django_db
def test_verify_audit_chains_what_is_pending_first(alice: Persona) -> None:
    agent_create(tenant=alice.tenant, name="a", actor=SYSTEM)
    assert _events(alice)[-1].pending
    err, out = StringIO(), StringIO()
    call_command("verify_audit", stdout=out, stderr=err)
    assert "All audit chains verify" in out.getvalue() and "Chained" in err.getvalue()
    assert not _events(alice)[-1].pending


@pytest.mark.django_db
def test_the_admin_shows_pending_events_as_pending(alice: Persona) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    agent_create(tenant=alice.tenant, name="a", actor=SYSTEM)
    page = client.get("/admin/agentplatform/auditevent/")
    assert page.status_code == 200 and "pending" in page.content.decode()
    _chain()
    page = client.get("/admin/agentplatform/auditevent/")
    assert page.status_code == 200 and "pending" not in page.content.decode()
    assert "#1" in page.content.decode()
