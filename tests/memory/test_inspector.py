"""The session inspector: timeline with every status, live Redis state, the compiled
context of each reply, summaries, learned memories, checkpoints; scoped and cheap."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agentplatform.core.audit import SYSTEM
from agentplatform.infra import redis_keys
from agents.engine.turn import turn_run
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Message
from memory.checkpoints import checkpoint_rollback
from memory.semantic import Source, memory_upsert
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _client(persona: Persona) -> Client:
    client = Client()
    client.force_login(persona.operator)
    return client


def test_the_inspector_shows_the_whole_story_of_a_session(
    alice: Persona, llm: ScriptedBackend, redis_client
) -> None:
    memory_upsert(
        actor=SYSTEM,
        tenant=alice.tenant,
        user_id=alice.user_id,
        text="The user's name is Ada.",
        source=Source("message", message_id=1, session_id=str(alice.session.pk)),
    )
    llm.script(Step(reply="Hello Ada."), Step(reply="Noted."), Step(reply="Undo me."))
    first = turn_run(session=alice.session, content="Hi, my name is Ada")
    turn_run(session=alice.session, content="Remember the blue one")
    turn_run(session=alice.session, content="a mistake")
    assert first.checkpoint is not None
    checkpoint_rollback(
        actor=SYSTEM,
        session=alice.session,
        checkpoint=alice.session.checkpoints.get(pk=first.checkpoint.id),
    )
    redis_client.set(redis_keys.lease(alice.session.pk), "someone", px=5000)

    page = _client(alice).get(reverse("admin:agents_session_inspect", args=[alice.session.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'class="status-rolled_back"' in html and "a mistake" in html  # still visible
    assert "held by" in html and "ms left" in html
    assert "The user&#x27;s name is Ada." in html  # retrieved memory, with its score
    assert "score 0." in html
    assert "Be brief." in html  # the system prompt the reply was given
    assert "Roll back to here" in html
    assert html.count("<details><summary>Reply #") == 3


def test_the_inspector_pages_by_seq_without_counting(alice: Persona, llm: ScriptedBackend) -> None:
    for index in range(30):
        turn_run(session=alice.session, content=f"message {index}")
    client = _client(alice)
    url = reverse("admin:agents_session_inspect", args=[alice.session.pk])
    with CaptureQueriesContext(connection) as queries:
        first = client.get(url)
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)
    html = first.content.decode()
    assert 'data-seq="60"' in html and 'data-seq="11"' in html and 'data-seq="10"' not in html
    older = client.get(url, {"before": 11}).content.decode()
    assert 'data-seq="10"' in older and 'data-seq="1"' in older and 'data-seq="11"' not in older
    assert Message.objects.filter(session=alice.session).count() == 60


def test_another_tenants_inspector_is_404(alice: Persona, bob: Persona) -> None:
    url = reverse("admin:agents_session_inspect", args=[bob.session.pk])
    assert _client(alice).get(url).status_code == 404
    assert _client(bob).get(url).status_code == 200
