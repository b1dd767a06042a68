"""The one door for a turn (agents.entry): every transport claims its key there, keeps it
alive while the turn runs, and completes or releases it; refusals are one set of errors."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from agentplatform.devtools.testing import wait_until
from agentplatform.http import idempotency
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agentplatform.models import IdempotencyRecord, Tenant
from agents import consumers, live
from agents.entry import client_message_key, content_validate, turn_begin
from agents.errors import ContentInvalid, KeyUsedForAnotherMessage, SessionNotFound
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Message, Session
from agents.selectors import session_find
from tests.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_REPLY = Step(reply=" ".join(["word"] * 24), delay=0.05)  # ~1.2 s of streaming


def _post(persona: Persona, content: object, **headers: str) -> Any:
    return persona.client().post(
        f"/api/v1/sessions/{persona.session.pk}/messages/",
        {"content": content},
        format="json",
        **headers,
    )


def _rest(persona: Persona) -> None:
    assert _post(persona, "slow one", HTTP_IDEMPOTENCY_KEY="door-1").status_code == 201


def _sse(persona: Persona) -> None:
    response = _post(
        persona, "slow one", HTTP_IDEMPOTENCY_KEY="door-1", HTTP_ACCEPT="text/event-stream"
    )
    assert b"event: checkpoint" in b"".join(response)


def _websocket(persona: Persona) -> None:
    """What the consumer runs in its worker thread for a `message` frame."""
    outcome: list[Any] = []
    context = contextvars.copy_context()  # the socket's tenant scope, as database_sync_to_async
    thread = threading.Thread(
        target=context.run,
        args=(
            lambda: outcome.append(
                consumers._turn_in_thread(
                    persona.session, "slow one", "door-1", live.GroupSend(persona.session.pk)
                )
            ),
        ),
    )
    thread.start()
    thread.join(30)
    assert outcome == [None]


@pytest.mark.parametrize("transport", [_rest, _sse, _websocket], ids=["rest", "sse", "ws"])
def test_every_transport_keeps_its_key_alive_while_the_turn_runs_then_completes_it(
    alice: Persona,
    llm: ScriptedBackend,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    transport: Callable[[Persona], None],
) -> None:
    """The lease renews every third of AGENTS_LEASE_SECONDS; each renewal extends the key's
    lock, which a websocket or streamed turn's heartbeat used to miss (it ran outside the
    claim's context)."""
    settings.AGENTS = {**settings.AGENTS, "LEASE_SECONDS": 0.6}
    beats: list[int | None] = []
    original = idempotency.heartbeat
    monkeypatch.setattr(
        idempotency, "heartbeat", lambda: (beats.append(idempotency._current.get()), original())
    )
    llm.script(SLOW_REPLY)

    transport(alice)

    record = IdempotencyRecord.objects.get(tenant=alice.tenant)
    assert beats and set(beats) == {record.pk}
    assert record.status_code == 201 and record.locked_until is None


@pytest.mark.parametrize("transport", [_rest, _websocket], ids=["rest", "ws"])
def test_a_turn_cut_off_by_an_unexpected_error_releases_its_key(
    alice: Persona, monkeypatch: pytest.MonkeyPatch, transport: Callable[[Persona], None]
) -> None:
    """Not only the engine's failures: anything that stops a turn frees its key, so a retry
    runs instead of waiting out a lock nobody holds."""

    def broken(**_: Any) -> None:
        raise RuntimeError("a bug deep in the turn")

    monkeypatch.setattr("agents.entry.turn_run", broken)
    if transport is _rest:
        client = alice.client()
        client.raise_request_exception = False
        response = client.post(
            f"/api/v1/sessions/{alice.session.pk}/messages/",
            {"content": "x"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="door-2",
        )
        assert response.status_code == 500
    else:
        pending = turn_begin(
            session=alice.session, content="x", key=client_message_key(alice.session, "door-2", "x")
        )
        with pytest.raises(RuntimeError):
            pending.run()
    # The key is kept with its lock lifted (the turn may have written part of itself, which
    # a retry resumes): a retry takes it over at once.
    record = IdempotencyRecord.objects.get(tenant=alice.tenant)
    assert record.locked_until is None and record.status_code is None
    monkeypatch.undo()
    if transport is _rest:
        assert _post(alice, "x", HTTP_IDEMPOTENCY_KEY="door-2").status_code == 201
    else:
        key = client_message_key(alice.session, "door-2", "x")
        assert turn_begin(session=alice.session, content="x", key=key).run().outcome == "completed"


def test_a_stray_value_error_inside_a_turn_is_a_server_error_not_bad_content(
    alice: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> None:
        raise ValueError("not the client's fault")

    monkeypatch.setattr("agents.entry.turn_run", broken)
    client = alice.client()
    client.raise_request_exception = False
    response = client.post(
        f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "fine"}, format="json"
    )
    assert response.status_code == 500


@pytest.mark.parametrize(
    ("content", "detail"),
    [("", "non-empty"), ("   ", "non-empty"), (7, "non-empty"), ("x" * 32_001, "at most")],
)
def test_content_is_checked_in_one_place_with_one_answer_per_transport(
    alice: Persona, content: object, detail: str
) -> None:
    with pytest.raises(ContentInvalid, match=detail):
        content_validate(content)
    response = _post(alice, content)
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/content"
    refused = consumers._turn_in_thread(alice.session, content, None, lambda s, t: None)  # type: ignore[arg-type]
    assert refused is not None and refused[0] == "bad_message"
    assert not Message.objects.filter(session=alice.session).exists()


def test_a_key_reused_for_another_message_is_refused_before_anything_runs(
    alice: Persona, llm: ScriptedBackend
) -> None:
    key = client_message_key(alice.session, "door-3", "first")
    turn_begin(session=alice.session, content="first", key=key).run()
    other = client_message_key(alice.session, "door-3", "second")
    with pytest.raises(KeyUsedForAnotherMessage):
        turn_begin(session=alice.session, content="second", key=other)
    replay = turn_begin(session=alice.session, content="first", key=key).replay
    assert replay is not None and replay[0] == 201
    assert len(llm.calls) == 1


def test_one_session_lookup_refuses_another_tenants_session_everywhere(
    alice: Persona, bob: Persona
) -> None:
    with pytest.raises(SessionNotFound):
        session_find(id=alice.session.pk, tenant_ids=[bob.tenant.pk])
    with pytest.raises(SessionNotFound):
        session_find(id="not-a-uuid", tenant_ids=[alice.tenant.pk])
    assert session_find(id=alice.session.pk, tenant_ids=None).pk == alice.session.pk
    with pytest.raises(CommandError, match="No such session"):
        call_command(
            "chat",
            "--tenant",
            bob.tenant.slug,
            "--session",
            str(alice.session.pk),
            stdout=StringIO(),
        )


def _field_values(obj: Any) -> dict[str, Any]:
    return {field.attname: getattr(obj, field.attname) for field in obj._meta.concrete_fields}


def test_the_session_lookup_loads_the_session_and_its_agent_as_the_orm_would(
    alice: Persona, bob: Persona, django_assert_num_queries: Any
) -> None:
    """session_find's hand-written statement (agents/selectors.py) builds what
    `select_related("agent")` built, JSON fields included, and honours every filter."""
    Session.objects.filter(pk=alice.session.pk).update(metadata={"plan": ["a", 1, None]})
    stored = Session.objects.select_related("agent").get(pk=alice.session.pk)
    with django_assert_num_queries(1):
        found = session_find(id=str(alice.session.pk), tenant_ids=[alice.tenant.pk])
        assert _field_values(found.agent) == _field_values(stored.agent)
    assert _field_values(found) == _field_values(stored)
    assert found.metadata == {"plan": ["a", 1, None]} and not found._state.adding
    both = [str(bob.tenant.pk), alice.tenant.pk]
    assert session_find(id=alice.session.pk, tenant_ids=both, active_tenant=True) is not None
    for tenant_ids in ([], [bob.tenant.pk], ["not-a-uuid"]):
        with pytest.raises(SessionNotFound):
            session_find(id=alice.session.pk, tenant_ids=tenant_ids)
    Tenant.objects.filter(pk=alice.tenant.pk).update(status=Tenant.Status.SUSPENDED)
    assert session_find(id=alice.session.pk, tenant_ids=None).pk == alice.session.pk
    with pytest.raises(SessionNotFound):
        session_find(id=alice.session.pk, tenant_ids=None, active_tenant=True)


def test_a_queued_turn_keeps_its_key_alive_while_it_waits(
    alice: Persona, llm: ScriptedBackend, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn queued behind another (double-text policy `enqueue`) may wait far longer than
    the key's lock: the wait itself extends it, so a retry cannot take the key over."""
    settings.IDEMPOTENCY_LOCK_SECONDS = 1
    alice.agent.double_text_policy = "enqueue"
    alice.agent.save(update_fields=["double_text_policy"])
    beats: list[int | None] = []
    original = idempotency.heartbeat
    monkeypatch.setattr(
        idempotency, "heartbeat", lambda: (beats.append(idempotency._current.get()), original())
    )
    llm.script(SLOW_REPLY, Step(reply="second"))
    context = contextvars.copy_context()
    first = threading.Thread(
        target=context.run, args=(lambda: turn_begin(session=alice.session, content="one").run(),)
    )
    first.start()
    lease = redis_keys.lease(alice.session.pk)
    wait_until(lambda: bool(get_redis().exists(lease)), what="the first turn to hold the session")

    key = client_message_key(alice.session, "door-q", "two")
    second = turn_begin(session=alice.session, content="two", key=key)
    second.run()
    first.join(30)

    assert second.record_id is not None and beats.count(second.record_id) >= 1
    assert IdempotencyRecord.objects.get(pk=second.record_id).status_code == 201


def test_a_new_key_looks_for_no_earlier_attempt_and_a_retried_one_does(
    alice: Persona, llm: ScriptedBackend
) -> None:
    from django.db import connection

    statements: list[str] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append(sql)
        return execute(sql, params, many, context)

    def earlier_attempt_lookups() -> list[str]:
        return [
            sql
            for sql in statements
            if sql.lstrip().startswith("SELECT") and '"turn_key" = ' in sql
        ]

    key = client_message_key(alice.session, "m1", "hello")
    with connection.execute_wrapper(record):
        turn_begin(session=alice.session, content="hello", key=key).run()
    assert earlier_attempt_lookups() == []  # the key was created for this turn

    # A key whose first attempt died (its lock lapsed) is taken over: the retry must look for
    # what that attempt left, to resume it.
    key = client_message_key(alice.session, "m2", "again")
    first = turn_begin(session=alice.session, content="again", key=key)
    IdempotencyRecord.objects.filter(pk=first.record_id).update(locked_until=None)
    statements.clear()
    with connection.execute_wrapper(record):
        turn_begin(session=alice.session, content="again", key=key).run()
    assert len(earlier_attempt_lookups()) == 2


def test_a_finished_turn_whose_key_lost_its_result_is_not_run_twice(
    alice: Persona, llm: ScriptedBackend
) -> None:
    # The key records a turn's result after the turn's own write; a process that died in
    # between (or a crash that lost that record's unflushed commit) leaves the key without
    # it. The retry takes the key over and must find the finished run, not run it again,
    # even when no checkpoint tells the turn is done (the `transitions` policy writes none).
    type(alice.agent).objects.filter(pk=alice.agent.pk).update(checkpoint_policy="transitions")
    alice.session.refresh_from_db()
    key = client_message_key(alice.session, "m1", "hello")
    first = turn_begin(session=alice.session, content="hello", key=key).run()
    IdempotencyRecord.objects.filter(tenant=alice.tenant).update(
        status_code=None, response_body=None, locked_until=None
    )
    again = turn_begin(session=alice.session, content="hello", key=key)
    assert again.replay is None
    result = again.run()
    assert result.user_message.pk == first.user_message.pk
    assert result.assistant_message is not None and first.assistant_message is not None
    assert result.assistant_message.pk == first.assistant_message.pk
    assert Message.objects.filter(session=alice.session).count() == 2
    record = IdempotencyRecord.objects.get(tenant=alice.tenant)
    assert record.status_code == 201
