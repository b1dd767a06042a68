"""A primary of the cluster is SIGKILLed while REST turns run on several sessions at once,
each sent with its own Idempotency-Key and retried with it until answered. The cluster
fails over to the primary's replica; no acknowledged message is lost or doubled: every
session's stored seqs are gapless and every acknowledged key's message is stored once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from agentplatform.core.audit import SYSTEM
from agents.llm.scripted import ScriptedBackend
from agents.models import Agent, Message, Session
from agents.services import session_open
from tests.cluster.local_cluster import LocalCluster
from tests.conftest import Persona

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SESSIONS = 4
TURNS = 6  # per session
RETRY_FOR_SECONDS = 90


def _client_loop(persona: Persona, session: Session, acknowledged: list[str]) -> None:
    client = persona.client()
    client.raise_request_exception = False  # a failed turn is an answer to retry, as over HTTP
    for index in range(TURNS):
        key = f"{session.pk}-{index}"
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        while time.monotonic() < deadline:
            response = client.post(
                f"/api/v1/sessions/{session.pk}/messages/",
                {"content": key},
                format="json",
                HTTP_IDEMPOTENCY_KEY=key,
            )
            if response.status_code == 201:
                acknowledged.append(key)
                break
            time.sleep(0.2)
    connection.close()


def test_a_primary_killed_mid_load_loses_and_doubles_no_acknowledged_message(
    alice: Persona, on_cluster: LocalCluster, llm: ScriptedBackend
) -> None:
    llm.delay = 0.01  # replies stream for a while: the kill finds turns in flight
    Agent.objects.filter(pk=alice.agent.pk).update(double_text_policy="enqueue")
    alice.agent.refresh_from_db()
    sessions = [
        session_open(actor=SYSTEM, tenant=alice.tenant, agent=alice.agent, user_id=f"u{n}")
        for n in range(SESSIONS)
    ]
    acknowledged: list[str] = []
    threads = [
        threading.Thread(target=_client_loop, args=(alice, session, acknowledged))
        for session in sessions
    ]
    # Short leases: a turn cut off by the failover leaves its lease behind for this long.
    with override_settings(AGENTS={**settings.AGENTS, "LEASE_SECONDS": 2.0}):
        for thread in threads:
            thread.start()
        while len(acknowledged) < SESSIONS and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        dead = on_cluster.kill_primary()
        at_kill = len(acknowledged)
        try:
            on_cluster.wait_failover(dead)
            for thread in threads:
                thread.join()
        finally:
            on_cluster.restart(dead)  # back to 3 + 3 for the tests after this one

    assert at_kill < SESSIONS * TURNS, "the load was still running when the primary died"
    assert sorted(acknowledged) == sorted(
        f"{session.pk}-{index}" for session in sessions for index in range(TURNS)
    )
    for session in sessions:
        messages = list(Message.objects.filter(session=session).order_by("seq"))
        assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
        users = Counter(m.content for m in messages if m.role == "user")
        assert users == Counter(f"{session.pk}-{index}" for index in range(TURNS))
