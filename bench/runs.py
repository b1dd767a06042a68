"""Background runs through one Celery worker, and resuming a run after an approval.

Prints and saves bench/results/runs.json:
- background runs per second through one worker process (solo pool): RUNS runs created in
  one transaction with `agents.runs.run_create` (one per session, SESSIONS sessions in turn),
  until the last one is `completed`. Each is a whole turn in the worker: the run's claim,
  the session lease, the context, the scripted LLM (no delay), the messages and checkpoint,
  the frames, the run's end (and the webhook check);
- p50/p99 from submitting an approval (`agents.runs.run_act`, its commit included) to the
  resumed run's first `token` frame in the session's frame stream (what a joined client
  receives), and to the run's `completed`, over APPROVALS runs that each stopped on a tool
  needing the API's approval; one at a time, the worker otherwise idle. The worker sends
  token frames in batches (TOKEN_FLUSH_SECONDS): with a scripted reply of no delay the first
  batch leaves with the reply's end.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, save, setup_django, summary_ms

RUNS = 200
SESSIONS = 50
APPROVALS = 50
TOOL = "tests.agents.tools.refund"  # a tool the API must approve (tests/agents/tools.py)
APPROVAL_SCRIPT = [
    {"reply": "", "tool_calls": [{"id": "r1", "name": "refund", "arguments": {"amount": 12}}]},
    {"reply": "Refunded 12 to your card; it shows within three days."},
]


def _wait(condition: Any, what: str, timeout: float = 600, pause: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(pause)


def _sessions(tenant: Any, count: int, **agent_fields: Any) -> list[Any]:
    from agentplatform.core.audit import SYSTEM
    from agents.services import agent_create, session_open

    agent = agent_create(tenant=tenant, name="bench", system_prompt="Be brief.", actor=SYSTEM,
                         **agent_fields)  # fmt: skip
    return [
        session_open(tenant=tenant, agent=agent, user_id=f"user-{index}", actor=SYSTEM)
        for index in range(count)
    ]


def _start(sessions: list[Any], count: int) -> list[Any]:
    """`count` background runs, round robin over the sessions, sent when the block commits."""
    from django.db import transaction

    from agents.runs import run_create

    with transaction.atomic():
        return [
            run_create(session=sessions[index % len(sessions)], content=f"Task {index}.")
            for index in range(count)
        ]


def _all_in(runs: list[Any], status: str) -> Any:
    from agents.models import Run

    ids = [run.pk for run in runs]
    return lambda: Run.objects.filter(pk__in=ids, status=status).count() == len(ids)


def _throughput(tenant: Any) -> dict[str, Any]:
    from agentplatform.devtools.testing import Worker

    sessions = _sessions(tenant, SESSIONS)
    worker = Worker({"LOG_LEVEL": "WARNING"})
    try:
        warm = _start(sessions, 10)  # the worker's imports, connections, prepared statements
        _wait(_all_in(warm, "completed"), "the warm-up runs", pause=0.01)
        started = time.monotonic()
        runs = _start(sessions, RUNS)
        created = time.monotonic() - started
        _wait(_all_in(runs, "completed"), "the runs", pause=0.01)
        elapsed = time.monotonic() - started
    finally:
        worker.stop()
    return {
        "runs": RUNS,
        "sessions": SESSIONS,
        "create_seconds": round(created, 3),
        "seconds": round(elapsed, 3),
        "runs_per_second": round(RUNS / elapsed, 1),
    }


def _first_token_after(run: Any, after_seq: int) -> float:
    """When the run's first token frame after `after_seq` is in the session's stream."""
    from agents.live import frames_after

    while True:
        for seq, text in frames_after(run.session_id, after_seq):
            after_seq = seq
            frame = json.loads(text)
            if frame.get("type") == "token" and frame.get("run") == str(run.pk):
                return time.monotonic()
        time.sleep(0.0005)


def _resume_latencies(runs: list[Any]) -> tuple[list[float], list[float]]:
    """Per run: seconds from the approval to the first token, and to `completed`."""
    from agentplatform.core.audit import SYSTEM
    from agents.live import current_seq
    from agents.models import Run
    from agents.runs import Answer, run_act

    first_token, completed = [], []
    for run in runs:
        after = current_seq(run.session_id)
        started = time.monotonic()
        run_act(run=run, answers=[Answer("r1", approve=True)], decided_by="api", actor=SYSTEM)
        first_token.append(_first_token_after(run, after) - started)
        done = Run.objects.filter(pk=run.pk, status="completed")
        _wait(done.exists, "the resumed run to finish")  # the worker idle for the next one
        completed.append(time.monotonic() - started)
    return first_token, completed


def _resume(tenant: Any) -> dict[str, Any]:
    from agentplatform.devtools.testing import Worker

    sessions = _sessions(tenant, APPROVALS + 5, tools=["refund"])
    env = {"LOG_LEVEL": "WARNING", "AGENTS_TOOLS": TOOL,
           "SCRIPTED_LLM_SCRIPT": json.dumps(APPROVAL_SCRIPT)}  # fmt: skip
    worker = Worker(env)
    try:
        waiting = _start(sessions, APPROVALS + 5)
        _wait(_all_in(waiting, "requires_action"), "the runs to wait for approval", pause=0.01)
        _resume_latencies(waiting[:5])  # warm-up
        first_token, completed = _resume_latencies(waiting[5:])
    finally:
        worker.stop()
    return summary_ms(first_token), summary_ms(completed)


def main() -> None:
    setup_django(CELERY_TASK_ALWAYS_EAGER="0", AGENTS_TOOLS=TOOL)
    sys.path.insert(0, str(ROOT))
    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create

    tenant, _ = tenant_create(actor=SYSTEM, slug=f"bench-{uuid.uuid4().hex[:8]}")
    throughput = _throughput(tenant)
    resume, completed = _resume(tenant)
    print(f"background runs: {throughput['runs_per_second']} runs/s through one worker "
          f"({RUNS} runs over {SESSIONS} sessions, {throughput['seconds']} s)")  # fmt: skip
    print(f"approval -> first token of the resumed run: p50 {resume['p50_ms']} ms, "
          f"p99 {resume['p99_ms']} ms; to completed: p50 {completed['p50_ms']} ms "
          f"({resume['n']} runs, one at a time)")  # fmt: skip
    save("runs", {"throughput": throughput, "action_to_first_token": resume,
                  "action_to_completed": completed, "worker": "1 process, solo",
                  "llm": "scripted, no delay"})  # fmt: skip


if __name__ == "__main__":
    main()
