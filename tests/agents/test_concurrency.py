from __future__ import annotations

import sys
import threading
import uuid
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from agentplatform.devtools.testing import wait_until
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents.engine.concurrency import LeaseLost, fence_check, lease_try_acquire
from agents.llm.scripted import ScriptedBackend
from agents.models import Agent, Message
from agents.services import NewMessage, StaleLease, messages_append
from memory.state import rebuild_working_memory
from memory.working import wm_read
from tests.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)
CONCURRENT = 20


def _race(persona: Persona, count: int) -> list[tuple[int, dict]]:
    results: list[tuple[int, dict]] = [(0, {})] * count
    barrier = threading.Barrier(count)

    def post(index: int) -> None:
        client = persona.client()
        barrier.wait()
        response = client.post(
            f"/api/v1/sessions/{persona.session.pk}/messages/",
            {"content": f"message {index}"},
            format="json",
        )
        results[index] = (response.status_code, response.json())
        connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _assert_consistent(persona: Persona) -> list[Message]:
    messages = list(Message.objects.filter(session=persona.session).order_by("seq"))
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    user_contents = Counter(m.content for m in messages if m.role == "user")
    assert all(count == 1 for count in user_contents.values()), "a message was duplicated"
    persona.session.refresh_from_db()
    cached = wm_read(persona.session)
    rebuilt = rebuild_working_memory(persona.session, persona.agent)
    assert cached is not None
    assert cached.as_dict() == rebuilt.as_dict()
    return messages


def _set_policy(persona: Persona, policy: str) -> None:
    Agent.objects.filter(pk=persona.agent.pk).update(double_text_policy=policy)
    persona.agent.refresh_from_db()
    persona.session.refresh_from_db()


def test_reject_answers_409_to_a_busy_session_and_loses_nothing(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _set_policy(alice, "reject")
    llm.delay = 0.01
    results = _race(alice, CONCURRENT)
    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {201, 409} and statuses[201] >= 1 and statuses[409] >= 1
    assert all(body["type"].endswith("session_busy") for s, body in results if s == 409)
    messages = _assert_consistent(alice)
    accepted = {body["user_message"]["content"] for status, body in results if status == 201}
    assert {m.content for m in messages if m.role == "user"} == accepted


def test_enqueue_runs_every_message_in_order(alice: Persona, llm: ScriptedBackend) -> None:
    _set_policy(alice, "enqueue")
    llm.delay = 0.002
    results = _race(alice, CONCURRENT)
    assert all(status == 201 for status, _ in results), results
    messages = _assert_consistent(alice)
    assert len(messages) == 2 * CONCURRENT
    assert all(m.status == "active" for m in messages)
    # Every reply follows its own question: the turns never interleaved.
    for question, answer in zip(messages[::2], messages[1::2], strict=True):
        assert answer.content == f"You said: {question.content}"


def test_interrupt_keeps_partial_replies_marked_interrupted(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _set_policy(alice, "interrupt")
    llm.delay = 0.02
    results = _race(alice, CONCURRENT)
    assert all(status == 201 for status, _ in results), results
    messages = _assert_consistent(alice)
    users = [m for m in messages if m.role == "user"]
    assert len(users) == CONCURRENT and all(m.status == "active" for m in users)
    replies = Counter(m.status for m in messages if m.role == "assistant")
    assert replies["interrupted"] >= 1
    assert messages[-1].status == "active"  # the last message's turn ran to the end


def test_rollback_discards_the_running_turn_but_keeps_its_rows(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _set_policy(alice, "rollback")
    llm.delay = 0.02
    results = _race(alice, CONCURRENT)
    assert all(status == 201 for status, _ in results), results
    messages = _assert_consistent(alice)
    assert len([m for m in messages if m.role == "user"]) == CONCURRENT
    rolled_back = [m for m in messages if m.status == "rolled_back"]
    assert rolled_back, "some running turn was discarded"
    memory = wm_read(alice.session)
    assert memory is not None
    assert not {m.seq for m in memory.messages} & {m.seq for m in rolled_back}


def test_a_stale_lease_holder_cannot_write(alice: Persona) -> None:
    with override_settings(AGENTS={**settings.AGENTS, "LEASE_SECONDS": 0.2}):
        stale = lease_try_acquire(alice.session)
        assert stale is not None
        _wait_for_lease_expiry(alice)  # the holder pauses past its lease
        fresh = lease_try_acquire(alice.session)
        assert fresh is not None
    with pytest.raises(LeaseLost), transaction.atomic():
        fence_check(alice.session.pk, stale.holder)
    with transaction.atomic():
        fence_check(alice.session.pk, fresh.holder)
    # The turn's own write is the fencing check: the stale holder's append is refused.
    late = [NewMessage("user", "late")]
    with pytest.raises(StaleLease):
        messages_append(session=alice.session, messages=late, fence=uuid.UUID(stale.holder))
    assert not Message.objects.filter(session=alice.session).exists()
    ok = [NewMessage("user", "ok")]
    messages_append(session=alice.session, messages=ok, fence=uuid.UUID(fresh.holder))
    with pytest.raises(LeaseLost):
        stale.renew()


def test_a_lease_whose_holder_died_is_recovered_after_expiry(alice: Persona) -> None:
    with override_settings(AGENTS={**settings.AGENTS, "LEASE_SECONDS": 0.2}):
        assert lease_try_acquire(alice.session) is not None  # never released
        assert lease_try_acquire(alice.session) is None
        _wait_for_lease_expiry(alice)
        assert lease_try_acquire(alice.session) is not None


def _wait_for_lease_expiry(persona: Persona) -> None:
    key = redis_keys.lease(persona.session.pk)
    wait_until(lambda: not get_redis().exists(key), what="the lease to expire")


def _in_a_task() -> bool:
    """Whether a Celery task (run eagerly by the tests) is on the call stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if "/celery/" in frame.f_code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count what the turn sends to Redis: one packed send is one round trip (a pipeline
    packs all its commands into one). Celery's eager tasks (the follow-ups, which a worker
    runs in production) are left out."""
    import redis.connection

    sent: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: object, command: object, check_health: bool = True) -> None:
        if not _in_a_task():
            sent.append(1)
        original(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def test_a_turn_makes_two_redis_round_trips(
    alice: Persona, llm: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.engine.turn import turn_run

    turn_run(session=alice.session, content="warm up")  # working memory cached
    sent = _count_round_trips(monkeypatch)
    frames: list[tuple[str, dict]] = []
    turn_run(session=alice.session, content="count me", emit=lambda t, f: frames.append((t, f)))
    # The first: the accepted frame, the lease, working memory. The last: the reply's
    # frames, working memory's save, the follow-ups, the lease's release.
    assert len(sent) == 2
    kinds = [frame_type for frame_type, _ in frames]
    assert kinds == ["accepted", "token", "message", "message", "checkpoint", "run"]
    seqs = [f["seq"] for _, f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert get_redis().get(redis_keys.lease(alice.session.pk)) is None


def test_a_turn_whose_first_round_trip_fails_gives_the_lease_back(
    alice: Persona, llm: ScriptedBackend
) -> None:
    import redis

    from agents.engine.turn import turn_run

    stream = redis_keys.frame_stream(alice.session.pk)
    get_redis().set(stream, "not a stream")  # the accepted frame's XADD fails
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        turn_run(session=alice.session, content="lost?")
    assert get_redis().get(redis_keys.lease(alice.session.pk)) is None
    get_redis().delete(stream)
    result = turn_run(session=alice.session, content="again")  # no wait for the lease's expiry
    assert result.assistant_message is not None


def test_a_turn_makes_two_statements_the_claim_reading_its_memory_tiers(
    alice: Persona, llm: ScriptedBackend
) -> None:
    from agents.engine.turn import turn_run

    statements: list[str] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if not _in_a_task():  # Celery's eager follow-ups run in a worker in production
            statements.append(sql)
        return execute(sql, params, many, context)

    turn_run(session=alice.session, content="warm up")
    with connection.execute_wrapper(record):
        turn_run(session=alice.session, content="count me")
    # The claim (with the run's row and the memory tiers' lookup), then the write.
    assert len(statements) == 2
    assert "lease_holder" in statements[0] and "memory_summary" in statements[0]
    assert "INSERT INTO agents_message" in statements[1]
