from __future__ import annotations

import dataclasses
import json

import pytest

from agentplatform.infra import redis_keys
from agents.api.serializers import TurnResultSerializer, turn_result_body
from agents.engine.turn import turn_run
from agents.llm.base import ToolCall
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Agent, Message
from memory.models import Checkpoint
from memory.working import wm_read
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _post(persona: Persona, content: object, **headers: str):
    return persona.client().post(
        f"/api/v1/sessions/{persona.session.pk}/messages/",
        {"content": content},
        format="json",
        **headers,
    )


def test_a_turn_stores_both_messages_and_a_checkpoint(alice: Persona, llm: ScriptedBackend) -> None:
    llm.script(Step(reply="Hello Ada."))
    response = _post(alice, "Hi, I am Ada.")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["outcome"] == "completed"
    assert body["user_message"]["seq"] == 1 and body["assistant_message"]["seq"] == 2
    assert body["assistant_message"]["content"] == "Hello Ada."
    checkpoint = Checkpoint.objects.get(pk=body["checkpoint"])
    assert checkpoint.high_water_seq == 2 and checkpoint.kind == "turn"
    assert llm.calls[0][0].role == "system"
    assert llm.calls[0][-1].content == "Hi, I am Ada."


def test_the_next_turn_sees_the_previous_messages(alice: Persona, llm: ScriptedBackend) -> None:
    _post(alice, "first")
    _post(alice, "second")
    contents = [m.content for m in llm.calls[1]]
    assert contents == ["Be brief.", "first", "You said: first", "second"]


def test_working_memory_is_saved_in_redis_with_the_agents_ttl(alice: Persona, redis_client) -> None:
    _post(alice, "remember me")
    memory = wm_read(alice.session)
    assert memory is not None
    assert [m.seq for m in memory.messages] == [1, 2]
    ttl = redis_client.ttl(redis_keys.working_memory(alice.session.pk))
    assert 0 < ttl <= alice.agent.working_memory_ttl_seconds


def test_redis_flushed_between_turns_rebuilds_the_same_context(
    alice: Persona, llm: ScriptedBackend, redis_client
) -> None:
    for text in ["one", "two", "three"]:
        _post(alice, text)
    _post(alice, "four")
    with_cache = [(m.role, m.content) for m in llm.calls[-1]]
    # The same history on a second session, with Redis flushed before its last turn.
    other = (
        alice.client()
        .post("/api/v1/sessions/", {"agent": str(alice.agent.pk), "user_id": "u"}, format="json")
        .json()["id"]
    )
    for text in ["one", "two", "three"]:
        alice.client().post(f"/api/v1/sessions/{other}/messages/", {"content": text}, format="json")
    redis_client.flushdb()
    alice.client().post(f"/api/v1/sessions/{other}/messages/", {"content": "four"}, format="json")
    assert [(m.role, m.content) for m in llm.calls[-1]] == with_cache


def test_working_memory_stays_within_the_budget(alice: Persona, llm: ScriptedBackend) -> None:
    Agent.objects.filter(pk=alice.agent.pk).update(context_token_budget=700)
    alice.session.refresh_from_db()
    for index in range(30):
        _post(alice, f"message number {index} " + "words " * 20)
    last_context = llm.calls[-1]
    tokens = sum(len(m.content) / 4 for m in last_context)
    assert tokens <= 700
    assert len(last_context) < 30
    assert last_context[-1].content.startswith("message number 29")


def test_working_memory_in_redis_equals_the_rebuild_from_postgres(alice: Persona) -> None:
    from memory.state import rebuild_working_memory

    for index in range(8):
        _post(alice, f"turn {index}")
    cached = wm_read(alice.session)
    rebuilt = rebuild_working_memory(alice.session, alice.agent)
    assert cached is not None
    assert cached.as_dict() == rebuilt.as_dict()


@pytest.mark.parametrize("content", ["", "   ", None, 42, ["a"], "x" * 40_000])
def test_bad_content_is_422_and_stores_nothing(alice: Persona, content: object) -> None:
    response = _post(alice, content)
    assert response.status_code == 422
    assert not Message.objects.filter(session=alice.session).exists()


def test_unknown_session_is_404(alice: Persona) -> None:
    response = alice.client().post(
        "/api/v1/sessions/00000000-0000-0000-0000-000000000000/messages/",
        {"content": "hi"},
        format="json",
    )
    assert response.status_code == 404


def test_another_tenants_session_is_404_and_runs_nothing(
    alice: Persona, bob: Persona, llm: ScriptedBackend
) -> None:
    response = bob.client().post(
        f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "hi"}, format="json"
    )
    assert response.status_code == 404
    assert not llm.calls
    assert not Message.objects.filter(session=alice.session).exists()


def test_a_broken_llm_is_502_keeps_the_user_message_and_releases_the_lease(
    alice: Persona, llm: ScriptedBackend, redis_client
) -> None:
    llm.script(Step(reply="this will break", fail_after_tokens=1))
    response = _post(alice, "are you there?")
    assert response.status_code == 502
    assert response.json()["type"].endswith("llm_failed")
    kept = Message.objects.get(session=alice.session)
    assert (kept.content, kept.status) == ("are you there?", "failed")
    assert redis_client.get(redis_keys.lease(alice.session.pk)) is None
    # The session carries on.
    assert _post(alice, "again").status_code == 201
    assert list(Message.objects.filter(session=alice.session).values_list("seq", flat=True)) == [
        1,
        2,
        3,
    ]


def test_a_repeated_idempotency_key_returns_the_first_turn(
    alice: Persona, llm: ScriptedBackend
) -> None:
    first = _post(alice, "once", HTTP_IDEMPOTENCY_KEY="turn-1")
    second = _post(alice, "once", HTTP_IDEMPOTENCY_KEY="turn-1")
    assert first.json() == second.json()
    assert len(llm.calls) == 1
    assert Message.objects.filter(session=alice.session).count() == 2


def test_task_state_changes_through_the_tool_and_transitions_checkpoint(
    alice: Persona, llm: ScriptedBackend
) -> None:
    Agent.objects.filter(pk=alice.agent.pk).update(checkpoint_policy="transitions")
    alice.session.refresh_from_db()
    step = ToolCall(id="c1", name="update_task_state", arguments={"step": "collect"})
    llm.script(Step(reply="ok"), Step(reply="moving on", tool_calls=[step]), Step(reply="same"))
    assert _post(alice, "a").json()["checkpoint"] is None
    moved = _post(alice, "b").json()
    assert moved["checkpoint"] is not None
    assert Checkpoint.objects.get(pk=moved["checkpoint"]).task_state == {"step": "collect"}
    assert _post(alice, "c").json()["checkpoint"] is None
    assert wm_read(alice.session).task_state == {"step": "collect"}


@pytest.mark.django_db(transaction=True)
def test_server_sent_events_stream_the_turn(alice: Persona, llm: ScriptedBackend) -> None:
    llm.script(Step(reply="streamed reply here"))
    response = _post(alice, "stream please", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    raw = b"".join(response).decode()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    types = [event["type"] for event in events]
    assert types[0] == "accepted"
    assert "".join(e["delta"] for e in events if e["type"] == "token") == "streamed reply here"
    assert types[-4:] == ["message", "message", "checkpoint", "run"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_sse_errors_before_the_stream_are_problem_json(alice: Persona, bob: Persona) -> None:
    response = bob.client().post(
        f"/api/v1/sessions/{alice.session.pk}/messages/",
        {"content": "x"},
        format="json",
        HTTP_ACCEPT="text/event-stream",
    )
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_turn_service_works_without_a_transport(alice: Persona) -> None:
    events: list[str] = []
    result = turn_run(session=alice.session, content="direct", emit=lambda e, p: events.append(e))
    assert result.assistant_message is not None
    assert events[0] == "accepted" and "token" in events


@pytest.mark.django_db(transaction=True)
def test_a_streamed_turn_with_an_idempotency_key_is_replayed_not_rerun(
    alice: Persona, llm: ScriptedBackend
) -> None:
    first = _post(alice, "stream once", HTTP_ACCEPT="text/event-stream", HTTP_IDEMPOTENCY_KEY="s1")
    b"".join(first)
    again = _post(alice, "stream once", HTTP_ACCEPT="text/event-stream", HTTP_IDEMPOTENCY_KEY="s1")
    assert again.status_code == 201
    replayed = again.content.decode()
    assert replayed.count("event: message") == 2
    assert len(llm.calls) == 1
    assert Message.objects.filter(session=alice.session).count() == 2


def test_the_turn_body_built_by_hand_is_what_its_serializer_describes(
    alice: Persona, llm: ScriptedBackend
) -> None:
    """The REST turn's body is built without DRF's serializers (agents/api/serializers.py);
    TurnResultSerializer, which the schema documents, must render every variant the same."""
    llm.script(Step(reply="Hello."))
    result = turn_run(session=alice.session, content="Hi", metadata={"source": "test"})
    assert result.run is not None and result.checkpoint is not None and result.usage is not None
    waiting = dataclasses.replace(
        result,
        outcome="requires_action",
        assistant_message=None,
        checkpoint=None,
        usage=None,
        run=None,
        required_action=[{"id": "call-1", "name": "lookup", "arguments": {"q": 1}}],
    )
    for variant in (result, waiting):
        by_hand = json.dumps(turn_result_body(variant), sort_keys=True)
        assert by_hand == json.dumps(TurnResultSerializer(variant).data, sort_keys=True)
