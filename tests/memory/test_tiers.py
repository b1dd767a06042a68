from __future__ import annotations

import itertools

import pytest
from django.db import IntegrityError, transaction

from agentplatform.core.audit import SYSTEM
from agents.engine.turn import turn_run
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Agent, Session
from agents.services import NewMessage, messages_append, session_open
from memory.models import Memory, Summary
from memory.summaries import summary_create
from tests.conftest import Persona


def _small_budget(persona: Persona, tokens: int = 700) -> None:
    Agent.objects.filter(pk=persona.agent.pk).update(context_token_budget=tokens)
    persona.agent.refresh_from_db()
    persona.session.refresh_from_db()


def _prompt_text(llm: ScriptedBackend) -> str:
    return "\n".join(m.content for m in llm.calls[-1])


@pytest.mark.django_db(transaction=True)
def test_facts_stated_early_are_recalled_after_60_turns_and_in_a_new_session(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _small_budget(alice)
    session = Session.objects.select_related("agent").get(pk=alice.session.pk)
    for content in [
        "Hi! My name is Ada.",
        "Please remember my order number is 4411.",
        "I prefer green tea in the morning.",
    ]:
        turn_run(session=session, content=content)
    for index in range(60):
        turn_run(session=session, content=f"Tell me something about topic {index}, briefly.")
    assert Memory.objects.filter(tenant=alice.tenant, user_id=alice.user_id).count() >= 3
    turn_run(session=session, content="What was my order number again?")
    assert "4411" in _prompt_text(llm)

    later = session_open(
        actor=SYSTEM, tenant=alice.tenant, agent=alice.agent, user_id=alice.user_id
    )
    later = Session.objects.select_related("agent").get(pk=later.pk)
    for question, fact in [
        ("What is my name?", "Ada"),
        ("What is my order number?", "4411"),
        ("What do I like to drink?", "green tea"),
    ]:
        turn_run(session=later, content=question)
        assert fact in _prompt_text(llm), (question, _prompt_text(llm))

    ranges = list(
        Summary.objects.filter(session=session, kind="compaction")
        .order_by("first_seq")
        .values_list("first_seq", "last_seq")
    )
    assert ranges, "messages that fell out of working memory were compacted"
    assert ranges[0][0] == 1
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first == last + 1, ranges
    assert all(s.text.strip() for s in Summary.objects.all())


@pytest.mark.django_db
def test_an_empty_or_fact_dropping_summary_is_replaced_by_an_extractive_one(
    alice: Persona, llm: ScriptedBackend
) -> None:
    messages_append(
        session=alice.session,
        messages=[
            NewMessage("user", "My name is Ada and my flight is LX 318 on 2026-12-04.", 14),
            NewMessage("assistant", "Noted, Ada: flight LX 318 on 2026-12-04.", 10),
            NewMessage("user", "The budget is 2500 euros.", 6),
            NewMessage("assistant", "Budget 2500 euros, got it.", 6),
        ],
    )
    llm.script(Step(reply=""), Step(reply="The user talked about travel plans."))
    summary = summary_create(session=alice.session, kind="compaction", first_seq=1, last_seq=4)
    assert summary is not None
    assert summary.method == "extractive"
    for fact in ["Ada", "318", "2026-12-04", "2500"]:
        assert fact in summary.text
    assert len(llm.calls) == 2


@pytest.mark.django_db
def test_a_good_llm_summary_is_accepted(alice: Persona, llm: ScriptedBackend) -> None:
    messages_append(
        session=alice.session,
        messages=[
            NewMessage("user", "I am Ada and I need 3 tickets.", 8),
            NewMessage("assistant", "3 tickets for Ada.", 5),
        ],
    )
    llm.script(Step(reply="Ada asked for 3 tickets."))
    summary = summary_create(session=alice.session, kind="compaction", first_seq=1, last_seq=2)
    assert summary is not None and summary.method == "llm"
    assert (summary.first_seq, summary.last_seq, summary.prompt_version) == (1, 2, "v1")


@pytest.mark.django_db
def test_overlapping_summaries_are_refused_by_the_database(alice: Persona) -> None:
    common = {
        "tenant": alice.tenant,
        "session": alice.session,
        "user_id": "u",
        "kind": "compaction",
        "method": "extractive",
        "prompt_version": "v1",
        "source_tokens": 1,
        "summary_tokens": 1,
    }
    Summary.objects.create(first_seq=1, last_seq=10, text="a", **common)
    with pytest.raises(IntegrityError), transaction.atomic():
        Summary.objects.create(first_seq=10, last_seq=12, text="b", **common)
    with pytest.raises(IntegrityError), transaction.atomic():
        Summary.objects.create(first_seq=11, last_seq=12, text="", **common)
    Summary.objects.create(first_seq=11, last_seq=12, text="c", **common)


@pytest.mark.django_db(transaction=True)
def test_context_and_summaries_endpoints(alice: Persona, bob: Persona) -> None:
    session = Session.objects.select_related("agent").get(pk=alice.session.pk)
    turn_run(session=session, content="My name is Ada.")
    context = (
        alice.client()
        .get(f"/api/v1/sessions/{alice.session.pk}/context/?query=what is my name")
        .json()
    )
    assert next(m["content"] for m in context["working_memory"]["messages"]) == "My name is Ada."
    assert context["memories"][0]["text"] == "The user's name is Ada."
    assert context["memories"][0]["score"] > 0.25
    assert context["tokens"]["total"] <= context["tokens"]["budget"]
    assert context["working_memory"]["ttl_seconds"] > 0
    summaries = alice.client().get(f"/api/v1/sessions/{alice.session.pk}/summaries/")
    assert summaries.status_code == 200
    for suffix in ("context/", "summaries/"):
        foreign = bob.client().get(f"/api/v1/sessions/{alice.session.pk}/{suffix}")
        assert foreign.status_code == 404
        assert "Ada" not in foreign.content.decode()


@pytest.mark.django_db(transaction=True)
def test_each_reply_records_the_context_it_was_given(alice: Persona) -> None:
    session = Session.objects.select_related("agent").get(pk=alice.session.pk)
    turn_run(session=session, content="I live in Lisbon.")
    result = turn_run(session=session, content="Where do I live?")
    record = result.assistant_message.metadata["context"]
    assert record["memories"][0]["text"] == "The user lives in Lisbon."
    assert record["working_memory"]["messages"] == 3
    assert record["total_tokens"] == result.context_tokens


@pytest.mark.django_db
def test_idle_sessions_get_a_session_summary_that_later_sessions_see(
    alice: Persona, llm: ScriptedBackend
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from memory.context import compile_extras
    from memory.tasks import summarize_idle_sessions

    messages_append(
        session=alice.session,
        messages=[
            NewMessage("user", "I booked room 512 at the Hotel Aurora.", 9),
            NewMessage("assistant", "Room 512 at Hotel Aurora, noted.", 8),
        ],
    )
    Session.objects.filter(pk=alice.session.pk).update(
        last_activity_at=timezone.now() - timedelta(hours=2)
    )
    llm.script(Step(reply="The user booked room 512 at the Hotel Aurora."))
    assert summarize_idle_sessions() == 1
    summary = Summary.objects.get(session=alice.session, kind="session")
    assert (summary.first_seq, summary.last_seq) == (1, 2)
    later = session_open(
        actor=SYSTEM, tenant=alice.tenant, agent=alice.agent, user_id=alice.user_id
    )
    extras = compile_extras(
        session=later, agent=alice.agent, query="which room?", budget=500, first_in_memory=None
    )
    assert "512" in extras.messages[0].content
    assert extras.record["summaries"][0]["id"] == str(summary.pk)
