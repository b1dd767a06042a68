"""Runs (issue: long-running agents): background runs, runs waiting for approvals or a
client's tool outputs, answers by tool call id, cancel, expiry, joining a run's frames."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import close_old_connections
from django.test import override_settings
from django.utils import timezone

from agentplatform.core import rls
from agentplatform.devtools.testing import wait_until
from agents.llm.base import ToolCall
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Agent, Message, Run, Session
from agents.runs import run_execute, runs_expire
from tests.agents import tools
from tests.conftest import Persona

pytestmark = pytest.mark.django_db

Callbacks = Callable[..., Any]


@pytest.fixture(autouse=True)
def registered_tools(alice: Persona) -> Iterator[None]:
    tools.calls_clear()
    with override_settings(AGENTS={**settings.AGENTS, "TOOLS": tools.PATHS}):
        _agent(alice, tools=["lookup_order", "refund", "wire", "close_account", "pick_file"])
        yield


def _agent(persona: Persona, **fields: Any) -> None:
    Agent.objects.filter(pk=persona.agent.pk).update(**fields)
    persona.agent.refresh_from_db()
    persona.session = Session.objects.select_related("agent").get(pk=persona.session.pk)


def _call(name: str, call_id: str, **arguments: object) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


def _start(persona: Persona, content: str = "hi", **body: Any) -> Any:
    return persona.client().post(
        f"/api/v1/sessions/{persona.session.pk}/runs/", {"content": content, **body}, format="json"
    )


def _act(persona: Persona, run_id: str, **body: Any) -> Any:
    return persona.client().post(f"/api/v1/runs/{run_id}/actions/", body, format="json")


def _get(persona: Persona, run_id: str) -> dict[str, Any]:
    response = persona.client().get(f"/api/v1/runs/{run_id}/")
    assert response.status_code == 200, response.content
    return dict(response.json())


def _no_call_without_result(session: Session) -> None:
    """Every tool call in the session's history has its result (OpenAI's rule)."""
    calls: set[str] = set()
    results: set[str] = set()
    for message in Message.objects.filter(session=session):
        calls |= {call["id"] for call in message.metadata.get("tool_calls", [])}
        if message.role == Message.Role.TOOL:
            results.add(message.metadata["tool_call_id"])
    assert calls == results


def test_a_background_run_answers_202_and_a_worker_finishes_it(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks: Callbacks
) -> None:
    llm.script(Step(reply="Done in the background."))
    with django_capture_on_commit_callbacks(execute=True):
        response = _start(alice, "work on it", background=True, metadata={"job": 7})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["background"] is True
    assert response["Location"] == f"/api/v1/runs/{body['id']}/"
    run = _get(alice, body["id"])  # the eager worker ran it when the request committed
    assert run["status"] == "completed" and run["metadata"] == {"job": 7}
    assert [m["role"] for m in run["messages"]] == ["user", "assistant"]
    assert run["messages"][1]["content"] == "Done in the background."
    assert run["usage"]["completion_tokens"] > 0
    assert run["started_at"] and run["finished_at"]


def test_a_run_the_caller_waits_on_answers_201_and_is_listed(
    alice: Persona, llm: ScriptedBackend
) -> None:
    llm.script(Step(reply="Right away."))
    response = _start(alice, "now please")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "completed"
    listed = alice.client().get(f"/api/v1/sessions/{alice.session.pk}/runs/?status=completed")
    assert [r["id"] for r in listed.json()["results"]] == [response.json()["id"]]
    other = alice.client().get(f"/api/v1/sessions/{alice.session.pk}/runs/?status=failed")
    assert other.json()["results"] == []
    bad = alice.client().get(f"/api/v1/sessions/{alice.session.pk}/runs/?status=nope")
    assert bad.status_code in (400, 422)


def test_every_turn_is_a_run(alice: Persona, llm: ScriptedBackend) -> None:
    llm.script(Step(reply="Hello."))
    body = alice.client().post(
        f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "hi"}, format="json"
    )
    assert body.status_code == 201
    run = Run.objects.get(pk=body.json()["run"])
    assert run.status == "completed" and not run.background
    assert run.assistant_message_id == body.json()["assistant_message"]["id"]


def test_another_tenants_runs_are_not_found(
    alice: Persona, bob: Persona, llm: ScriptedBackend
) -> None:
    llm.script(Step(reply="Mine."))
    run_id = _start(alice).json()["id"]
    client = bob.client()
    assert client.get(f"/api/v1/runs/{run_id}/").status_code == 404
    assert client.post(f"/api/v1/runs/{run_id}/cancel/").status_code == 404
    answer = {"decisions": [{"tool_call_id": "c1", "approve": True}]}
    assert client.post(f"/api/v1/runs/{run_id}/actions/", answer, format="json").status_code == 404
    assert client.get(f"/api/v1/runs/{run_id}/events/").status_code == 404
    assert client.get(f"/api/v1/sessions/{alice.session.pk}/runs/").status_code == 404
    started = client.post(
        f"/api/v1/sessions/{alice.session.pk}/runs/", {"content": "x", "background": True}
    )
    assert started.status_code == 404
    assert not Run.objects.filter(session=alice.session, content="x").exists()


def test_an_approval_stops_the_run_until_the_api_decides(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks: Callbacks
) -> None:
    llm.script(
        Step(reply="", tool_calls=[_call("refund", "c1", amount=30), _call("lookup_order", "c2")]),
        Step(reply="Refunded 30."),
    )
    response = _start(alice, "refund order 7")
    assert response.status_code == 201, response.content
    run = response.json()
    assert run["status"] == "requires_action"
    pending = run["required_action"]["tool_calls"]
    assert [(c["id"], c["name"], c["approval"]) for c in pending] == [("c1", "refund", "api")]
    assert [call[0] for call in tools.CALLS] == ["lookup_order"]  # ran at once: no approval
    alice.session.refresh_from_db()
    assert alice.session.awaiting_turn
    with django_capture_on_commit_callbacks(execute=True):
        answered = _act(alice, run["id"], decisions=[{"tool_call_id": "c1", "approve": True}])
    assert answered.status_code == 202, answered.content
    assert answered.json()["status"] == "queued"
    done = _get(alice, run["id"])
    assert done["status"] == "completed"
    assert [call[0] for call in tools.CALLS] == ["lookup_order", "refund"]
    assert [m["role"] for m in done["messages"]] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    assert done["messages"][-1]["content"] == "Refunded 30."
    assert done["answered"]["c1"] == {"approve": True, "reason": "", "by": "api", "name": "refund"}
    # The resumed LLM call saw both results.
    assert {m.tool_call_id for m in llm.calls[-1] if m.role == "tool"} == {"c1", "c2"}
    alice.session.refresh_from_db()
    assert alice.session.awaiting_turn == ""
    _no_call_without_result(alice.session)


def test_parallel_calls_are_answered_one_at_a_time(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks: Callbacks
) -> None:
    llm.script(
        Step(reply="", tool_calls=[_call("refund", "c1", amount=5), _call("refund", "c2")]),
        Step(reply="One refund went through."),
    )
    run_id = _start(alice, "two refunds").json()["id"]
    first = _act(alice, run_id, decisions=[{"tool_call_id": "c1", "approve": True}])
    assert first.status_code == 202 and first.json()["status"] == "requires_action"
    again = _act(alice, run_id, decisions=[{"tool_call_id": "c1", "approve": False}])
    assert again.status_code == 409 and again.json()["type"].endswith("already_answered")
    assert tools.CALLS == []  # nothing runs before every call has its answer
    with django_capture_on_commit_callbacks(execute=True):
        denied = {"tool_call_id": "c2", "approve": False, "reason": "duplicate"}
        assert _act(alice, run_id, decisions=[denied]).status_code == 202
    run = _get(alice, run_id)
    assert run["status"] == "completed"
    assert [(name, args) for name, args, _ in tools.CALLS] == [("refund", {"amount": 5})]
    results = {m["metadata"]["tool_call_id"]: m["content"] for m in run["messages"][2:4]}
    assert json.loads(results["c2"]) == {
        "error": "The call was not approved.",
        "reason": "duplicate",
    }
    _no_call_without_result(alice.session)


def test_a_client_tool_waits_for_the_callers_output(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks: Callbacks
) -> None:
    llm.script(Step(reply="", tool_calls=[_call("pick_file", "f1")]), Step(reply="Got a.txt."))
    run_id = _start(alice, "attach a file").json()["id"]
    wrong = _act(alice, run_id, decisions=[{"tool_call_id": "f1", "approve": True}])
    assert wrong.status_code == 422 and "decisions[0].tool_call_id" in json.dumps(wrong.json())
    unknown = _act(alice, run_id, tool_outputs=[{"tool_call_id": "zz", "output": 1}])
    assert unknown.status_code == 422
    empty = _act(alice, run_id)
    assert empty.status_code in (400, 422)
    with django_capture_on_commit_callbacks(execute=True):
        output = {"tool_call_id": "f1", "output": {"file": "a.txt"}}
        assert _act(alice, run_id, tool_outputs=[output]).status_code == 202
    run = _get(alice, run_id)
    assert run["status"] == "completed"
    assert json.loads(run["messages"][2]["content"]) == {"file": "a.txt"}
    late = _act(alice, run_id, tool_outputs=[output])
    assert late.status_code == 409 and late.json()["type"].endswith("run_not_waiting")


def test_an_operators_tool_is_not_decided_by_the_api(alice: Persona, llm: ScriptedBackend) -> None:
    llm.script(Step(reply="", tool_calls=[_call("wire", "w1", amount=1000)]))
    run_id = _start(alice, "wire it").json()["id"]
    response = _act(alice, run_id, decisions=[{"tool_call_id": "w1", "approve": True}])
    assert response.status_code == 422
    assert "decided by the operator" in json.dumps(response.json())
    assert Run.objects.get(pk=run_id).status == "requires_action"


def test_a_new_message_meets_a_waiting_run_by_the_double_text_policy(
    alice: Persona, llm: ScriptedBackend
) -> None:
    llm.script(Step(reply="", tool_calls=[_call("refund", "c1")]))
    run_id = _start(alice, "refund").json()["id"]
    for policy in ("reject", "enqueue"):
        _agent(alice, double_text_policy=policy)
        busy = alice.client().post(
            f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "hello?"}, format="json"
        )
        assert busy.status_code == 409, busy.content
        assert busy.json()["type"].endswith("action_required")
        assert run_id in busy.json()["detail"]
    _agent(alice, double_text_policy="interrupt")
    llm.script(Step(reply="New topic then."))
    moved_on = alice.client().post(
        f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "never mind"}, format="json"
    )
    assert moved_on.status_code == 201, moved_on.content
    waiting = Run.objects.get(pk=run_id)
    assert waiting.status == "cancelled" and waiting.error["code"] == "interrupted"
    assert tools.CALLS == []
    _no_call_without_result(alice.session)


def test_rollback_policy_discards_the_waiting_run(alice: Persona, llm: ScriptedBackend) -> None:
    llm.script(Step(reply="", tool_calls=[_call("refund", "c1")]))
    run_id = _start(alice, "refund").json()["id"]
    _agent(alice, double_text_policy="rollback")
    llm.script(Step(reply="Fresh start."))
    response = alice.client().post(
        f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "again"}, format="json"
    )
    assert response.status_code == 201
    assert Run.objects.get(pk=run_id).error["code"] == "rolled_back"
    turn = Run.objects.get(pk=run_id).turn_key
    statuses = {
        m.status for m in Message.objects.filter(session=alice.session, metadata__turn=turn)
    }
    assert statuses == {"rolled_back"}
    # The discarded turn is not in the next call's context.
    assert all(m.content != "refund" for m in llm.calls[-1])
    _no_call_without_result(alice.session)


def test_an_expired_wait_leaves_no_call_without_a_result(
    alice: Persona, llm: ScriptedBackend
) -> None:
    llm.script(
        Step(reply="", tool_calls=[_call("refund", "c1"), _call("pick_file", "c2")]),
    )
    run_id = _start(alice, "refund and attach").json()["id"]
    run = Run.objects.get(pk=run_id)
    assert run.expires_at is not None
    assert abs((run.expires_at - timezone.now()).total_seconds() - 86_400) < 60
    Run.objects.filter(pk=run_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "test"):
        assert runs_expire() == 1
    run.refresh_from_db()
    assert run.status == "expired" and run.error["code"] == "expired"
    _no_call_without_result(alice.session)
    alice.session.refresh_from_db()
    assert alice.session.awaiting_turn == ""
    llm.script(Step(reply="Back again."))
    assert _start(alice, "hello").json()["status"] == "completed"


def test_cancelling_a_waiting_run_settles_it_and_twice_is_harmless(
    alice: Persona, llm: ScriptedBackend
) -> None:
    llm.script(Step(reply="", tool_calls=[_call("refund", "c1")]))
    run_id = _start(alice, "refund").json()["id"]
    first = alice.client().post(f"/api/v1/runs/{run_id}/cancel/")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    second = alice.client().post(f"/api/v1/runs/{run_id}/cancel/")
    assert second.status_code == 200 and second.json()["status"] == "cancelled"
    _no_call_without_result(alice.session)
    assert tools.CALLS == []


def test_a_queued_run_cancelled_before_a_worker_takes_it_never_runs(
    alice: Persona, llm: ScriptedBackend
) -> None:
    run_id = _start(alice, "later", background=True).json()["id"]  # callbacks not run
    response = alice.client().post(f"/api/v1/runs/{run_id}/cancel/")
    assert response.json()["status"] == "cancelled"
    assert run_execute(run_id) == "cancelled"
    assert llm.calls == [] or len(llm.calls) == 0
    assert not Message.objects.filter(session=alice.session).exists()


@pytest.mark.django_db(transaction=True)
def test_cancel_during_streaming_stops_the_llm_call(alice: Persona, llm: ScriptedBackend) -> None:
    llm.script(Step(reply="word " * 400, delay=0.01))
    done = threading.Event()
    result: dict[str, Any] = {}

    def waiter() -> None:
        try:
            with rls.tenant_scope(alice.tenant.pk):
                result["response"] = _start(alice, "write a lot")
        finally:
            close_old_connections()
            done.set()

    threading.Thread(target=waiter, daemon=True).start()
    wait_until(
        lambda: Run.objects.filter(session=alice.session, status="in_progress").exists(),
        what="the run to start",
    )
    run = Run.objects.get(session=alice.session)
    wait_until(lambda: _streamed(alice.session) > 0, what="tokens")
    cancelled = alice.client().post(f"/api/v1/runs/{run.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert done.wait(10)
    reply = Message.objects.get(pk=Run.objects.get(pk=run.pk).assistant_message_id)
    assert reply.status == "interrupted"
    assert 0 < len(reply.content) < len("word " * 400)  # the stream stopped part-way


def _streamed(session: Session) -> int:
    from agents.live import current_seq

    return current_seq(session.pk)


@pytest.mark.django_db(transaction=True)  # the join reads in its own threads
def test_joining_a_runs_events_replays_its_frames_to_the_end(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks: Callbacks
) -> None:
    llm.script(Step(reply="Joined later."))
    with django_capture_on_commit_callbacks(execute=True):
        run_id = _start(alice, "go", background=True).json()["id"]
    response = alice.client().get(f"/api/v1/runs/{run_id}/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    raw = b"".join(response).decode()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "accepted"
    assert {e["run"] for e in events} == {run_id}
    assert "".join(e["delta"] for e in events if e["type"] == "token") == "Joined later."
    assert events[-1]["type"] == "run" and events[-1]["status"] == "completed"
    bad = alice.client().get(f"/api/v1/runs/{run_id}/events/?after_seq=x")
    assert bad.status_code in (400, 422)


def _login(persona: Persona, role: str = "manager") -> Any:
    from django.test import Client

    from agentplatform.models import Membership

    Membership.objects.filter(user=persona.operator).update(role=role)
    client = Client()
    client.force_login(persona.operator)
    return client


def test_operators_decide_their_calls_on_the_pending_approvals_page(
    alice: Persona,
    bob: Persona,
    llm: ScriptedBackend,
    django_capture_on_commit_callbacks: Callbacks,
) -> None:
    llm.script(Step(reply="", tool_calls=[_call("wire", "w1", amount=900)]), Step(reply="Wired."))
    run_id = _start(alice, "wire 900").json()["id"]
    page = _login(alice).get("/admin/agents/run/approvals/")
    assert page.status_code == 200 and b"w1" in page.content and b"Approve" in page.content
    assert run_id.encode() in page.content
    assert run_id.encode() not in _login(bob).get("/admin/agents/run/approvals/").content
    viewer = _login(alice, role="viewer")
    assert b"managers decide" in viewer.get("/admin/agents/run/approvals/").content
    denied = viewer.post(
        "/admin/agents/run/approvals/", {"run": run_id, "tool_call_id": "w1", "decision": "approve"}
    )
    assert denied.status_code == 403
    foreign = _login(bob).post(
        "/admin/agents/run/approvals/", {"run": run_id, "tool_call_id": "w1", "decision": "approve"}
    )
    assert foreign.status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        decided = _login(alice).post(
            "/admin/agents/run/approvals/",
            {"run": run_id, "tool_call_id": "w1", "decision": "approve", "reason": "checked"},
        )
    assert decided.status_code == 302
    run = Run.objects.get(pk=run_id)
    assert run.status == "completed"
    assert run.action_results["w1"]["by"] == "operator"
    from agentplatform.models import AuditEvent

    event = AuditEvent.objects.filter(tenant=alice.tenant, action="run.answered").get()
    assert event.actor_kind == "operator" and "900" not in json.dumps(event.payload)
    schedule = {"cron": "30 7 * * *", "timezone": "Asia/Tokyo", "content": "Morning check."}
    created = alice.client().post(
        f"/api/v1/sessions/{alice.session.pk}/schedules/", schedule, format="json"
    )
    assert created.status_code == 201, created.content
    inspector = _login(alice).get(f"/admin/agents/session/{alice.session.pk}/inspect/")
    assert b"approved by operator" in inspector.content
    assert b"30 7 * * *" in inspector.content and b"Asia/Tokyo" in inspector.content


def test_runs_tell_the_tenants_webhooks_what_became_of_them(
    alice: Persona, bob: Persona, llm: ScriptedBackend
) -> None:
    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.webhooks import webhook_endpoint_create
    from agentplatform.models import WebhookEvent

    events = ["run.requires_action", "run.completed", "run.cancelled"]
    webhook_endpoint_create(
        tenant=alice.tenant, url="https://hooks.example/in", events=events, actor=SYSTEM
    )
    llm.script(Step(reply="Plain."), Step(reply="", tool_calls=[_call("refund", "c1")]))
    completed = _start(alice, "hello").json()["id"]
    waiting = _start(alice, "refund").json()["id"]
    alice.client().post(f"/api/v1/runs/{waiting}/cancel/")
    bodies = [(e.type, json.loads(e.body)) for e in WebhookEvent.objects.order_by("created_at")]
    sent = [(kind, body["data"]["run"]["id"]) for kind, body in bodies]
    assert sent == [
        ("run.completed", completed),
        ("run.requires_action", waiting),
        ("run.cancelled", waiting),
    ]
    assert bodies[1][1]["data"]["run"]["required_action"]["tool_calls"][0]["id"] == "c1"
    llm.script(Step(reply="Bob's."))
    _start(bob, "bob's turn")  # bob has no endpoint: nothing is stored for him
    assert not WebhookEvent.objects.filter(tenant=bob.tenant).exists()


def test_runs_left_in_progress_by_a_dead_process_are_reaped(
    alice: Persona, llm: ScriptedBackend, django_capture_on_commit_callbacks: Callbacks
) -> None:
    from agents.engine.runs import NewRun, run_open
    from agents.runs import runs_reap

    long_ago = timezone.now() - timedelta(minutes=5)
    # A waited-on run whose server died before it wrote anything: it failed.
    opened = run_open(session=alice.session, content="lost", turn_key="k-lost")
    assert isinstance(opened, NewRun)
    opened.insert()
    lost = opened.run
    # A background run whose worker died: sent to a worker again, which finishes it.
    llm.script(Step(reply="Picked up again."))
    queued = _start(alice, "again", background=True).json()["id"]  # callbacks not run
    Run.objects.filter(pk=queued).update(status="in_progress", started_at=long_ago)
    Run.objects.filter(pk=lost.pk).update(started_at=long_ago)
    maintenance = rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "test")
    with django_capture_on_commit_callbacks(execute=True), maintenance:
        assert runs_reap() == 2
        assert runs_reap() == 0  # handled: the next sweep leaves them alone
    assert Run.objects.get(pk=lost.pk).error["code"] == "interrupted"
    assert Run.objects.get(pk=queued).status == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_run_waiting_for_the_session_can_be_read_and_cancelled(
    alice: Persona, llm: ScriptedBackend
) -> None:
    _agent(alice, double_text_policy="enqueue")
    llm.script(Step(reply="slow " * 200, delay=0.01), Step(reply="never"))
    done: list[Any] = []

    def send(content: str) -> None:
        try:
            with rls.tenant_scope(alice.tenant.pk):
                done.append(_start(alice, content))
        finally:
            close_old_connections()

    first = threading.Thread(target=send, args=("first",), daemon=True)
    first.start()
    wait_until(lambda: _streamed(alice.session) > 2, what="the first run to stream")
    second = threading.Thread(target=send, args=("second",), daemon=True)
    second.start()
    wait_until(
        lambda: Run.objects.filter(session=alice.session, content="second").exists(),
        what="the queued run's row",
    )
    queued = Run.objects.get(session=alice.session, content="second")
    response = alice.client().post(f"/api/v1/runs/{queued.pk}/cancel/")
    assert response.json()["status"] == "cancelled"
    first.join(20)
    second.join(20)
    assert sorted(r.json()["status"] for r in done if r.status_code == 201) == ["completed"]
    assert Run.objects.get(pk=queued.pk).error["code"] == "cancelled"
    assert not Message.objects.filter(session=alice.session, content="second").exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_adds_no_statement_to_a_turn(alice: Persona, llm: ScriptedBackend) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.engine.turn import turn_run

    turn_run(session=alice.session, content="warm up")
    with CaptureQueriesContext(connection) as captured:
        turn_run(session=alice.session, content="count me")
    statements = [q["sql"] for q in captured.captured_queries]
    # The run's row rides on the lease's claim, its end on the messages' write, and the
    # webhook check on that write too: no statement of their own.
    assert "INSERT INTO agents_run" in statements[0] and "agents_session" in statements[0]
    write = next(sql for sql in statements if "INSERT INTO agents_message" in sql)
    assert "UPDATE agents_run" in write and "agentplatform_webhookendpoint" in write
    alone = [sql for sql in statements if sql not in (statements[0], write)]
    assert not any("agents_run" in sql or "webhookendpoint" in sql for sql in alone)
    run = Run.objects.get(session=alice.session, content="count me")
    assert run.status == "completed" and run.assistant_message_id is not None


def test_a_background_runs_content_is_checked_like_a_messages(alice: Persona) -> None:
    with override_settings(AGENTS={**settings.AGENTS, "MAX_MESSAGE_CHARS": 10}):
        response = _start(alice, "x" * 11, background=True)
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/content"
    assert not Run.objects.filter(session=alice.session).exists()


def test_rolling_the_session_back_cancels_a_waiting_run(
    alice: Persona, llm: ScriptedBackend
) -> None:
    from memory.models import Checkpoint

    llm.script(Step(reply="First."))
    _start(alice, "hello")
    head = Checkpoint.objects.filter(session=alice.session).latest("created_at")
    llm.script(Step(reply="", tool_calls=[_call("refund", "c1")]))
    waiting = _start(alice, "refund").json()["id"]
    response = alice.client().post(
        f"/api/v1/sessions/{alice.session.pk}/rollback/",
        {"checkpoint": str(head.pk)},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert Run.objects.get(pk=waiting).status == "cancelled"
    _no_call_without_result(alice.session)
    llm.script(Step(reply="Fresh."))
    assert _start(alice, "again").json()["status"] == "completed"
