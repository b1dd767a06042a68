"""Turns with several LLM calls (tool use): checkpoints per granularity, recorded side
effects, and resuming a turn cut off between two calls (issue: checkpoints)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from agentplatform.devtools.testing import wait_until
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents.conf import agents_settings
from agents.engine.recovery import turns_recover
from agents.engine.turn import turn_run
from agents.llm.base import ToolCall
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Agent, Message
from memory.models import Checkpoint
from memory.working import wm_read
from tests.agents import tools
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def registered_tools(alice: Persona) -> Iterator[None]:
    tools.calls_clear()
    with override_settings(AGENTS={**settings.AGENTS, "TOOLS": tools.PATHS, "LEASE_SECONDS": 2}):
        Agent.objects.filter(pk=alice.agent.pk).update(
            tools=["lookup_order", "send_email", "broken"]
        )
        alice.session.refresh_from_db()
        alice.agent.refresh_from_db()
        yield


def _policy(persona: Persona, policy: str) -> None:
    Agent.objects.filter(pk=persona.agent.pk).update(checkpoint_policy=policy)
    persona.session.refresh_from_db()


def _call(name: str, call_id: str, **arguments: object) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


def _two_tool_script(llm: ScriptedBackend, *, last: Step | None = None) -> None:
    llm.script(
        Step(reply="", tool_calls=[_call("lookup_order", "c1", number=7)]),
        Step(
            reply="Found it.",
            tool_calls=[
                _call("send_email", "c2", to="ada@example.com"),
                _call("update_task_state", "c3", step="notified"),
            ],
        ),
        last or Step(reply="Order 7 has shipped; I e-mailed you."),
    )


ASK = {"content": "Where is order 7? Mail me."}


def _post_turn(persona: Persona, key: str):
    url = f"/api/v1/sessions/{persona.session.pk}/messages/"
    return persona.client().post(url, ASK, format="json", HTTP_IDEMPOTENCY_KEY=key)


def _cut_off(persona: Persona, llm: ScriptedBackend, policy: str, key: str) -> None:
    """A two-tool turn whose third LLM call fails: 502, the tools ran once."""
    _policy(persona, policy)
    _two_tool_script(llm, last=Step(reply="never", fail_after_tokens=0))
    response = _post_turn(persona, key)
    assert response.status_code == 502, response.json()
    assert len(tools.CALLS) == 2


def _history(persona: Persona) -> list[tuple[int, str, str, str]]:
    return list(
        Message.objects.filter(session=persona.session)
        .order_by("seq")
        .values_list("seq", "role", "content", "status")
    )


@pytest.mark.parametrize(
    ("policy", "kinds"),
    [
        ("every_llm_call", [("llm_call", True), ("llm_call", True), ("llm_call", False)]),
        ("every_turn", [("turn", False)]),
        ("transitions", [("transition", False)]),  # the step changed to "notified"
    ],
)
def test_each_granularity_writes_the_checkpoints_it_promises(
    alice: Persona, llm: ScriptedBackend, policy: str, kinds: list[tuple[str, bool]]
) -> None:
    _policy(alice, policy)
    _two_tool_script(llm)
    result = turn_run(session=alice.session, content="Where is order 7? Mail me.")

    checkpoints = Checkpoint.objects.filter(session=alice.session).order_by("created_at")
    assert [(c.kind, c.turn_open) for c in checkpoints] == kinds
    assert checkpoints.last().task_state == {"step": "notified"}
    assert [(name, key) for name, _, key in tools.CALLS] == [
        ("lookup_order", f"{result.assistant_message.metadata['turn']}:1:0"),
        ("send_email", f"{result.assistant_message.metadata['turn']}:2:0"),
    ]
    history = _history(alice)
    assert [seq for seq, *_ in history] == list(range(1, 8))
    assert [role for _, role, *_ in history] == [
        "user", "assistant", "tool", "assistant", "tool", "tool", "assistant",
    ]  # fmt: skip
    assert result.assistant_message.content == "Order 7 has shipped; I e-mailed you."
    # The second call saw the first tool's answer; the third saw both.
    assert json.loads(llm.calls[1][-1].content) == {"order": 7, "status": "shipped"}
    assert llm.calls[1][-1].tool_call_id == "c1"
    assert json.loads(llm.calls[2][-2].content) == {"sent": True, "to": "ada@example.com"}
    # Working memory keeps the conversation, not the tool exchange.
    memory = wm_read(alice.session)
    assert memory is not None
    assert [(m.role, m.content) for m in memory.messages] == [
        ("user", "Where is order 7? Mail me."),
        ("assistant", "Found it."),
        ("assistant", "Order 7 has shipped; I e-mailed you."),
    ]


def test_side_effects_are_recorded_on_the_checkpoint_after_them(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _policy(alice, "every_llm_call")
    _two_tool_script(llm)
    turn_run(session=alice.session, content="Where is order 7? Mail me.")
    effects = [
        c.side_effects
        for c in Checkpoint.objects.filter(session=alice.session).order_by("created_at")
    ]
    assert [[e["tool"] for e in batch] for batch in effects] == [
        ["lookup_order"],
        ["send_email"],
        [],
    ]
    assert effects[0][0]["result"] == {"order": 7, "status": "shipped"}
    assert effects[0][0]["idempotency_key"].endswith(":1:0")


def test_transitions_checkpoint_only_on_a_step_change_or_when_asked(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _policy(alice, "transitions")
    llm.script(Step(reply="Hello."))
    turn_run(session=alice.session, content="Hi")
    assert not Checkpoint.objects.filter(session=alice.session).exists()
    llm.script(Step(reply="Saved.", tool_calls=[_call("request_checkpoint", "c1")]))
    turn_run(session=alice.session, content="Please save here")
    assert list(
        Checkpoint.objects.filter(session=alice.session).values_list("kind", flat=True)
    ) == ["manual"]


def test_a_turn_cut_off_between_llm_calls_resumes_on_a_retry_with_the_same_key(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _cut_off(alice, llm, "every_llm_call", "k-1")
    open_checkpoint = Checkpoint.objects.filter(session=alice.session).latest("created_at")
    assert open_checkpoint.turn_open

    llm.script(Step(reply="Order 7 has shipped; I e-mailed you."))
    retry = _post_turn(alice, "k-1")
    assert retry.status_code == 201, retry.json()
    assert len(tools.CALLS) == 2  # the recorded tools were not called again
    assert len(llm.calls) == 4  # three calls, the third failed; the retry made the fourth
    history = _history(alice)
    assert [role for _, role, *_ in history] == [
        "user", "assistant", "tool", "assistant", "tool", "tool", "assistant",
    ]  # fmt: skip
    assert [content for _, role, content, _ in history if role == "user"] == [ASK["content"]]
    assert retry.json()["user_message"]["seq"] == 1
    assert retry.json()["assistant_message"]["seq"] == 7
    # The resumed call saw the whole exchange so far.
    assert [m.role for m in llm.calls[3][-5:]] == ["assistant", "tool", "assistant", "tool", "tool"]
    latest = Checkpoint.objects.filter(session=alice.session).latest("created_at")
    assert not latest.turn_open and latest.parent_id == open_checkpoint.pk


def test_the_recovery_task_finishes_a_cut_off_turn_once(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _cut_off(alice, llm, "every_llm_call", "k-2")

    llm.script(Step(reply="Order 7 has shipped; I e-mailed you."))
    with override_settings(AGENTS={**settings.AGENTS, "TOOLS": tools.PATHS, "LEASE_SECONDS": 0.05}):
        _wait_until_the_lease_is_over(alice)
        assert turns_recover() == 1
        assert turns_recover() == 0  # the turn is closed now
    assert len(tools.CALLS) == 2
    assert _history(alice)[-1][1:3] == ("assistant", "Order 7 has shipped; I e-mailed you.")

    # The client's retry now gets the finished turn, and no LLM call runs.
    calls = len(llm.calls)
    retry = _post_turn(alice, "k-2")
    assert retry.status_code == 201, retry.json()
    assert retry.json()["assistant_message"]["content"] == "Order 7 has shipped; I e-mailed you."
    assert len(llm.calls) == calls
    assert len(_history(alice)) == 7


def test_every_turn_reruns_tools_with_the_same_idempotency_keys(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _cut_off(alice, llm, "every_turn", "k-3")
    failed = _history(alice)
    assert failed[0][3] == "failed"  # the user's message kept and marked; the tool calls kept too
    assert [role for _, role, *_ in failed] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "tool",
    ]

    _two_tool_script(llm)
    assert _post_turn(alice, "k-3").status_code == 201
    keys = [key for _, _, key in tools.CALLS]
    assert keys[:2] == keys[2:]  # a tool can deduplicate by its key


def test_a_failing_or_unknown_tool_answers_the_llm_with_an_error(
    alice: Persona, llm: ScriptedBackend
) -> None:
    llm.script(
        Step(reply="", tool_calls=[_call("broken", "c1"), _call("no_such_tool", "c2")]),
        Step(reply="Sorry, that failed."),
    )
    result = turn_run(session=alice.session, content="Do it")
    answers = [json.loads(m.content) for m in llm.calls[1] if m.role == "tool"]
    assert answers == [
        {"error": "RuntimeError: the mail server is down"},
        {"error": "unknown tool 'no_such_tool'"},
    ]
    assert result.assistant_message.content == "Sorry, that failed."


def test_an_agent_names_only_registered_tools(alice: Persona) -> None:
    url = f"/api/v1/agents/{alice.agent.pk}/"
    response = alice.client().patch(url, {"tools": ["lookup_order", "rm_rf"]}, format="json")
    assert response.status_code == 422  # validation problems are 422 here
    assert "rm_rf" in json.dumps(response.json())
    assert alice.client().patch(url, {"tools": ["lookup_order"]}, format="json").status_code == 200


def test_a_rollback_lists_the_side_effects_it_cannot_undo(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _policy(alice, "every_llm_call")
    llm.script(Step(reply="Hello."))
    first = turn_run(session=alice.session, content="Hi")
    _two_tool_script(llm)
    turn_run(session=alice.session, content="Where is order 7? Mail me.")
    assert first.checkpoint is not None

    response = alice.client().post(
        f"/api/v1/sessions/{alice.session.pk}/rollback/",
        {"checkpoint": str(first.checkpoint.id)},
        format="json",
    )
    assert response.status_code == 200, response.json()
    undone = response.json()
    assert [e["tool"] for e in undone["side_effects"]] == ["lookup_order", "send_email"]
    assert undone["rolled_back_seqs"] == list(range(3, 10))


def _wait_until_the_lease_is_over(persona: Persona) -> None:
    """The cut-off turn's lease has run out: its key is gone from Redis, and its open
    checkpoint is older than a lease (what the recovery task looks for)."""
    lease = redis_keys.lease(persona.session.pk)
    opened = Checkpoint.objects.filter(session=persona.session, turn_open=True).latest("created_at")
    seconds = agents_settings().LEASE_SECONDS

    def over() -> bool:
        age = (timezone.now() - opened.created_at).total_seconds()
        return not get_redis().exists(lease) and age > seconds

    wait_until(over, what="the cut-off turn's lease to run out")
