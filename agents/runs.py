"""Runs: started in the background, executed by workers, cancelled, answered.

A background run is a row (`queued`) and a Celery message sent by name after the commit;
a worker executes it through the same door as every turn (`agents.entry.turn_begin` with
the run's turn key), so a worker that dies mid-run leaves a turn the recovery task or a
redelivered message resumes from its last checkpoint. A run that stops for approvals or a
client's tool outputs (`requires_action`) is resumed by `run_act` once every pending call
has its answer, by a worker again; cancel and expiry settle it (every pending call gets
an error result, so no call is left without one).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from django.db import transaction
from django.utils import timezone

from agentplatform.core import rls
from agentplatform.core.audit import Actor, audit_row, audited, unaudited
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents.conf import agents_settings
from agents.engine.ports import state_backend
from agents.engine.runs import run_ended, run_started
from agents.engine.turn import CANCELLED, EXPIRED, TURN_FAILURES, turn_settle
from agents.entry import content_validate, turn_begin
from agents.models import Run, Session
from agents.tools import Approval, ToolKind

CANCEL_WAIT_SECONDS = 5.0
# A run in progress whose session nobody holds for this long was left by a dead process.
REAP_AFTER_SECONDS = 60
CANCEL_POLL_SECONDS = 0.02


class RunConflict(Exception):
    """The run is not in a state that allows this (409); `code` names why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class ActionInvalid(Exception):
    """An answer that does not fit the call it names (422), keyed by its field."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


@dataclass(frozen=True)
class Answer:
    """One answer to a pending call: a client tool's `output`, or a decision."""

    tool_call_id: str
    output: Any = None
    approve: bool | None = None  # None: this is an output
    reason: str = ""

    def stored(self, decided_by: str) -> dict[str, Any]:
        if self.approve is None:
            return {"output": self.output, "by": decided_by}
        return {"approve": self.approve, "reason": self.reason, "by": decided_by}


@unaudited("the conversation itself: a run is the record of its own turn")
def run_create(*, session: Session, content: object, metadata: dict[str, Any] | None = None) -> Run:
    """A background run: queued now, executed by a worker once this transaction commits."""
    run = Run.objects.create(
        tenant_id=session.tenant_id,
        session=session,
        background=True,
        content=content_validate(content),
        metadata=metadata or {},
        turn_key=uuid.uuid4().hex,
    )
    transaction.on_commit(lambda: _enqueue(run))
    return run


@unaudited("the conversation itself: a worker running a run's turn")
def run_execute(run_id: uuid.UUID | str) -> str | None:
    """A worker's part: run (or resume) the run's turn; its status afterwards. A run that
    is final, or waits for answers, is left alone (a duplicate or late message)."""
    run = Run.objects.select_related("session__agent", "session__tenant").filter(pk=run_id).first()
    if run is None or run.status not in (Run.Status.QUEUED, Run.Status.IN_PROGRESS):
        return run.status if run else None
    if run.cancel_requested_at is not None:
        turn_settle(session=run.session, run=run, settle=CANCELLED)
        return run.status
    if not run_started(run):
        return run.status
    pending = turn_begin(session=run.session, content=run.content, metadata=run.metadata, run=run)
    # A failure is recorded on the run by the engine, which published its `error` frame.
    with contextlib.suppress(*TURN_FAILURES):
        pending.run()
    return run.status


@audited("run.cancelled")
def run_cancel(*, run: Run, actor: Actor) -> Run:
    """Stop the run: a queued one never starts, a waiting one is settled (each pending call
    gets an error result), a running one stops its LLM stream or leaves the queue and keeps
    what it did. Waits a moment for the run to stop; cancelling twice is harmless."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.final:
            return locked
        first_request = locked.cancel_requested_at is None
        if first_request:
            locked.cancel_requested_at = timezone.now()
            locked.save(update_fields=["cancel_requested_at"])
            audit_row(
                locked, actor=actor, action="run.cancelled", payload={"status": locked.status}
            )
        waiting = locked.status == Run.Status.REQUIRES_ACTION or locked.required_action
        started = locked.started_at is not None
    # The running turn sees this key within its next check (CANCEL_CHECK_SECONDS).
    ttl = agents_settings().RECOVERY_WINDOW_SECONDS
    get_redis().set(redis_keys.run_stop(locked.session_id, locked.pk), "1", ex=ttl)
    session = Session.objects.select_related("agent").get(pk=locked.session_id)
    if waiting:
        turn_settle(session=session, run=locked, settle=CANCELLED)
    elif not started:
        run_ended(locked, Run.Status.CANCELLED, error={"code": "cancelled", "detail": "Cancelled."})
    return _wait_final(locked)


@audited("run.answered")
def run_act(*, run: Run, answers: list[Answer], decided_by: str, actor: Actor) -> Run:
    """Record outputs and decisions for the run's pending calls (some or all of them); once
    every call has its answer the run is queued again and a worker resumes it."""
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.status != Run.Status.REQUIRES_ACTION or not locked.required_action:
            raise RunConflict("run_not_waiting", f"The run is {locked.status}: it awaits nothing.")
        pending = {call["id"]: call for call in locked.required_action["tool_calls"]}
        results = dict(locked.action_results or {})
        for index, answer in enumerate(answers):
            _check_answer(answer, pending, results, decided_by, index)
            name = pending[answer.tool_call_id]["name"]
            results[answer.tool_call_id] = {**answer.stored(decided_by), "name": name}
        locked.action_results = results
        complete = all(call_id in results for call_id in pending)
        if complete:
            locked.status = Run.Status.QUEUED
        locked.save(update_fields=["action_results", "status"])
        audit_row(
            locked,
            actor=actor,
            action="run.answered",
            # Which calls were answered and how; never the outputs (the tenant's data).
            payload={
                "decided_by": decided_by,
                "calls": {
                    a.tool_call_id: ("output" if a.approve is None else a.approve) for a in answers
                },
            },
        )
        if complete:
            transaction.on_commit(lambda: _enqueue(locked))
    return locked


@unaudited("a run's own lifecycle, recorded on the run (status `expired`, its error)")
def runs_expire() -> int:
    """Beat: settle every run whose wait for an action ran out; how many were."""
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "expired runs"):
        due = list(
            Run.objects.filter(
                status=Run.Status.REQUIRES_ACTION, expires_at__lt=timezone.now()
            ).values_list("pk", "tenant_id")[:500]
        )
    expired = 0
    for run_id, tenant_id in due:
        with rls.tenant_scope(tenant_id):
            run = Run.objects.select_related("session__agent").get(pk=run_id)
            turn_settle(session=run.session, run=run, settle=EXPIRED)
            expired += run.status == Run.Status.EXPIRED
    return expired


@unaudited("a run's own lifecycle, recorded on the run (its status, its error)")
def runs_reap() -> int:
    """Beat: runs left `in_progress` by a process that died, once nothing holds their
    session's lease for a while. A background run is sent to a worker again (it resumes: a
    recorded tool never runs twice); a waited-on run whose turn finished is marked so; one
    whose turn wrote nothing fails (its caller saw the connection drop), and one cut off
    between LLM calls is left to the recovery task, which resumes it."""
    conf = agents_settings()
    cutoff = timezone.now() - timedelta(seconds=max(3 * conf.LEASE_SECONDS, REAP_AFTER_SECONDS))
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "stuck runs"):
        stuck = list(
            Run.objects.filter(status=Run.Status.IN_PROGRESS, started_at__lt=cutoff).values_list(
                "pk", "tenant_id", "session_id"
            )[:500]
        )
    client, reaped = get_redis(), 0
    for run_id, tenant_id, session_id in stuck:
        if client.exists(redis_keys.lease(session_id)):
            continue  # a turn runs on the session: perhaps this one, or it waits its turn
        if not client.set(
            redis_keys.run_reaped(session_id, run_id), "1", nx=True, ex=REAP_AFTER_SECONDS
        ):
            continue  # handled a moment ago
        with rls.tenant_scope(tenant_id):
            reaped += _reap(Run.objects.select_related("session__agent").get(pk=run_id))
    return reaped


def _reap(run: Run) -> bool:
    if run.background:
        _enqueue(run)
        return True
    progress = state_backend().turn_progress(session=run.session, turn_key=run.turn_key)
    if progress is not None and progress.resumable:
        return False  # the recovery task resumes it
    if progress is not None:
        rows = progress.messages
        run_ended(run, Run.Status.COMPLETED, user_message=rows[0], assistant_message=rows[-1])
        return True
    detail = "The process serving the run stopped before it finished; send the message again."
    run_ended(run, Run.Status.FAILED, error={"code": "interrupted", "detail": detail})
    return True


def _check_answer(
    answer: Answer,
    pending: dict[str, dict[str, Any]],
    results: dict[str, Any],
    decided_by: str,
    index: int,
) -> None:
    call = pending.get(answer.tool_call_id)
    where = f"[{index}].tool_call_id"
    if call is None:
        raise ActionInvalid(where, f"The run has no pending call {answer.tool_call_id!r}.")
    if answer.tool_call_id in results:
        raise RunConflict("already_answered", f"Call {answer.tool_call_id!r} has its answer.")
    if call["kind"] == ToolKind.CLIENT and answer.approve is not None:
        raise ActionInvalid(where, f"Call {answer.tool_call_id!r} needs the tool's output.")
    if call["kind"] != ToolKind.CLIENT and answer.approve is None:
        raise ActionInvalid(where, f"Call {answer.tool_call_id!r} needs a decision (approve).")
    allowed = call.get("approval") or Approval.API  # a client tool's output comes by API
    if answer.approve is not None and allowed != decided_by:
        raise ActionInvalid(where, f"Call {answer.tool_call_id!r} is decided by the {allowed}.")


def _wait_final(run: Run) -> Run:
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while True:
        run.refresh_from_db()
        if run.final or time.monotonic() > deadline:
            return run
        time.sleep(CANCEL_POLL_SECONDS)


def _enqueue(run: Run) -> None:
    # By name: services never import task modules (docs/architecture.md).
    current_app.signature("agents.run_execute", args=(str(run.pk),)).apply_async()
