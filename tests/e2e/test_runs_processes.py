"""Runs across real processes (issue: long-running agents): a background run whose worker
is SIGKILLed mid-tool resumes on another worker without running a recorded tool again, and a
run waiting for approval survives stopping every platform process (and losing its Redis
keys): its state is in PostgreSQL alone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from agentplatform.core import rls
from agentplatform.devtools.testing import Server, Worker
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agentplatform.project.celery import app as celery_app
from agents.models import Agent, Message, Run
from agents.runs import run_create
from tests.agents import tools
from tests.conftest import Persona

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

WORK_SCRIPT = [
    {"reply": "", "tool_calls": [{"id": "a1", "name": "lookup_order", "arguments": {"n": 7}}]},
    {"reply": "", "tool_calls": [{"id": "b1", "name": "slow_effect", "arguments": {"seconds": 3}}]},
    {"reply": "All done."},
]
APPROVAL_SCRIPT = [
    {"reply": "", "tool_calls": [{"id": "r1", "name": "refund", "arguments": {"amount": 12}}]},
    {"reply": "Refunded 12."},
]


def _env(script: list[dict[str, Any]], tool_names: list[str]) -> dict[str, str]:
    return {
        "SCRIPTED_LLM_SCRIPT": json.dumps(script),
        "AGENTS_TOOLS": ",".join(f"tests.agents.tools.{name}" for name in tool_names),
        "AGENTS_LEASE_SECONDS": "2",
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }


@pytest.fixture
def queued_tasks() -> Iterator[None]:
    celery_app.conf.task_always_eager = False
    tools.calls_clear()
    yield
    celery_app.conf.task_always_eager = True


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _status(run_id: object) -> str:
    return str(Run.objects.filter(pk=run_id).values_list("status", flat=True).first())


def test_a_worker_killed_mid_tool_is_replaced_and_no_recorded_tool_runs_again(
    alice: Persona, llm: object, queued_tasks: None
) -> None:
    names = ["lookup_order", "slow_effect"]
    Agent.objects.filter(pk=alice.agent.pk).update(tools=names, checkpoint_policy="every_llm_call")
    env = _env(WORK_SCRIPT, names)
    first = Worker(env)
    try:
        with rls.tenant_scope(alice.tenant.pk):
            run = run_create(session=alice.session, content="do the work")
        started = lambda: any(name == "slow_effect" for name, _ in tools.recorded_calls())  # noqa: E731
        _wait(started, 60, "the worker to reach the slow tool")
        time.sleep(0.5)  # mid-tool: its result is not recorded
    finally:
        first.kill()
    assert _status(run.pk) == "in_progress"
    second = Worker(env)
    try:
        _wait(lambda: _status(run.pk) == "completed", 90, "the run to finish on the new worker")
    finally:
        second.kill()
    calls = tools.recorded_calls()
    assert [key for name, key in calls if name == "lookup_order"] == [f"{run.turn_key}:1:0"]
    slow_keys = {key for name, key in calls if name == "slow_effect"}
    assert slow_keys == {f"{run.turn_key}:2:0"}  # called again under the same key...
    assert get_redis().scard(f"{tools.calls_key()}:effects") == 1  # ...its effect happened once
    results = list(
        Message.objects.filter(session=alice.session, role="tool").values_list(
            "metadata__tool_call_id", flat=True
        )
    )
    assert sorted(results) == ["a1", "b1"]  # one result per call, none doubled
    run.refresh_from_db()
    assert Message.objects.get(pk=run.assistant_message_id).content == "All done."


def test_a_run_waiting_for_approval_survives_restarting_every_process(
    alice: Persona, llm: object, queued_tasks: None
) -> None:
    Agent.objects.filter(pk=alice.agent.pk).update(tools=["refund"])
    env = _env(APPROVAL_SCRIPT, ["refund"])
    headers = {"Authorization": f"Bearer {alice.api_key}"}
    server, worker = Server(env), Worker(env)
    try:
        response = requests.post(
            f"{server.url}/api/v1/sessions/{alice.session.pk}/runs/",
            json={"content": "refund my order", "background": True},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        _wait(lambda: _status(run_id) == "requires_action", 60, "the run to wait")
    finally:
        server.stop()
        worker.stop()
    # Redis may lose everything: the waiting run needs none of it.
    client = get_redis()
    for key in client.scan_iter(match=redis_keys.session_prefix(alice.session.pk)):
        client.delete(key)
    server, worker = Server(env), Worker(env)
    try:
        answer = {"decisions": [{"tool_call_id": "r1", "approve": True}]}
        response = requests.post(
            f"{server.url}/api/v1/runs/{run_id}/actions/", json=answer, headers=headers, timeout=10
        )
        assert response.status_code == 202, response.text
        _wait(lambda: _status(run_id) == "completed", 60, "the resumed run to finish")
        body = requests.get(f"{server.url}/api/v1/runs/{run_id}/", headers=headers, timeout=10)
    finally:
        server.stop()
        worker.stop()
    assert [name for name, _ in tools.recorded_calls()] == ["refund"]
    messages = body.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[-1]["content"] == "Refunded 12."
