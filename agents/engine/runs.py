"""A run's state as its turn moves: the engine records each step on the run's row.

Every turn is a run (agents.models.Run): the transports' turns are runs their caller waits
on, background runs are executed by a worker. The engine moves a run through
`in_progress` to a final status or to `requires_action`, and tells the session's sockets
with a `run` frame. These writes are small single-row UPDATEs; the messages and checkpoints
of the turn are written by the turn itself.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from agentplatform.core.webhooks import EventType, event_publish, listening_probe
from agents.llm.base import Usage
from agents.models import Message, Run, Session
from agents.services import NOW, Appended, CompanionUpdate, MessageRef

# The webhook event of each status a run reaches (its tenant's endpoints may listen).
_EVENTS: dict[str, str] = {
    Run.Status.REQUIRES_ACTION: EventType.RUN_REQUIRES_ACTION,
    Run.Status.COMPLETED: EventType.RUN_COMPLETED,
    Run.Status.FAILED: EventType.RUN_FAILED,
    Run.Status.CANCELLED: EventType.RUN_CANCELLED,
    Run.Status.EXPIRED: EventType.RUN_EXPIRED,
}


# The row of a transport's run is written by the statement that claims the session's lease
# (no round trip of its own), without waiting for the WAL flush as that claim does: if a
# crash loses it, the turn it describes was cut off too, and the turn's own messages commit
# durably. A turn that must wait for the session writes it before it waits, so the run can
# be read and cancelled while it is queued.
_ROW = """INSERT INTO agents_run (id, tenant_id, session_id, status, background, content,
    metadata, turn_key, action_results, usage, created_at, started_at)
SELECT %(r_id)s, %(r_tenant)s, %(r_session)s, 'in_progress', false, %(r_content)s,
    %(r_metadata)s::jsonb, %(r_turn)s, '{}'::jsonb, '{}'::jsonb, now(), now()"""
# Both from constants of this module: no value is formatted into SQL.
_INSERT = (
    "WITH async AS (SELECT set_config('synchronous_commit', 'off', true))\n"  # noqa: S608
    + _ROW
    + " FROM async"
)


@dataclass(frozen=True)
class NewRun:
    """A transport's run, not written yet: its row goes with the lease's claim (`sql`,
    `params`), or by `insert()` when the turn has to wait for the session first."""

    run: Run

    @property
    def sql(self) -> str:
        return _ROW

    @property
    def params(self) -> dict[str, Any]:
        run = self.run
        return {
            "r_id": run.pk,
            "r_tenant": run.tenant_id,
            "r_session": run.session_id,
            "r_content": run.content,
            "r_metadata": json.dumps(run.metadata),
            "r_turn": run.turn_key,
        }

    def insert(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(_INSERT, self.params)


def run_open(
    *,
    session: Session,
    content: str,
    turn_key: str,
    metadata: dict[str, Any] | None = None,
    retried: bool = False,
) -> Run | NewRun:
    """The run of a turn its caller waits on, in progress from now: a NewRun to write with
    the lease's claim. A turn `retried` under its key (an Idempotency-Key, a
    client_message_id) keeps the run it began with."""
    existing = Run.objects.filter(session=session, turn_key=turn_key).first() if retried else None
    if existing is not None:
        return existing
    return NewRun(
        Run(
            id=uuid.uuid4(),
            tenant_id=session.tenant_id,
            session=session,
            status=Run.Status.IN_PROGRESS,
            content=content,
            metadata=metadata or {},
            turn_key=turn_key,
            created_at=timezone.now(),
            started_at=timezone.now(),
        )
    )


def run_started(run: Run) -> bool:
    """Mark a queued run in progress; False when it is final already (cancelled before a
    worker took it, say), so it must not run."""
    now = timezone.now()
    updated = (
        Run.objects.filter(pk=run.pk)
        .exclude(status__in=Run.FINAL)
        .update(status=Run.Status.IN_PROGRESS, started_at=now)
    )
    if updated:
        run.status, run.started_at = Run.Status.IN_PROGRESS, now
    return bool(updated)


def run_paused(
    run: Run, tool_calls: list[dict[str, Any]], wait_seconds: int, user_message: Message
) -> None:
    """The run waits for these calls' outputs or decisions, for at most `wait_seconds`."""
    run.status = Run.Status.REQUIRES_ACTION
    run.required_action = {"tool_calls": tool_calls}
    run.expires_at = timezone.now() + timedelta(seconds=wait_seconds)
    run.user_message = user_message
    Run.objects.filter(pk=run.pk).update(
        status=run.status,
        required_action=run.required_action,
        expires_at=run.expires_at,
        user_message=user_message,
    )
    _tell(run)


def run_ended(
    run: Run,
    status: str,
    *,
    user_message: Message | None = None,
    assistant_message: Message | None = None,
    usage: Usage | None = None,
    error: dict[str, str] | None = None,
) -> None:
    """Record the run's final status and what it produced. A run already final stays as
    it is (two ends racing: a cancel and the turn's own end)."""
    run.status, run.finished_at, run.error = status, timezone.now(), error
    run.required_action = None
    fields: dict[str, Any] = {
        "status": status,
        "finished_at": run.finished_at,
        "error": error,
        "required_action": None,
    }
    if user_message is not None:
        run.user_message, fields["user_message"] = user_message, user_message
    if assistant_message is not None:
        run.assistant_message, fields["assistant_message"] = assistant_message, assistant_message
    if usage is not None:
        run.usage = fields["usage"] = _usage_dict(run.usage, usage)
    if Run.objects.filter(Q(pk=run.pk) & ~Q(status__in=Run.FINAL)).update(**fields):
        _tell(run)


def run_end_update(
    run: Run,
    status: str,
    *,
    user_message: Message | MessageRef,
    assistant_message: MessageRef,
    usage: Usage | None,
    error: dict[str, str] | None,
) -> CompanionUpdate:
    """The run's end as an update the turn's last write makes in its own statement: the
    run ends exactly when its messages are stored, without a round trip of its own, and the
    same statement tells whether a webhook endpoint listens (no query when none does)."""
    values: dict[str, Any] = {
        "status": status,
        "finished_at": NOW,
        "error": error,
        "required_action": None,
        "user_message_id": user_message
        if isinstance(user_message, MessageRef)
        else user_message.pk,
        "assistant_message_id": assistant_message,
    }
    if usage is not None:
        values["usage"] = _usage_dict(run.usage, usage)
    probe, params = listening_probe(tenant_id=run.tenant_id, type=_EVENTS[status])
    final = tuple(str(value) for value in Run.FINAL)
    return CompanionUpdate("agents_run", run.pk, values, ("status", final), probe, params)


def run_end_written(run: Run, update: CompanionUpdate, appended: Appended) -> None:
    """After the write of `run_end_update`: the run as stored, and its event if it ended
    now (not before) and an endpoint listens."""
    if not appended.updated:
        return
    values = update.values
    run.status, run.finished_at = values["status"], timezone.now()
    run.error, run.required_action = values["error"], None
    run.usage = values.get("usage", run.usage)
    user, assistant = values["user_message_id"], values["assistant_message_id"]
    if isinstance(user, MessageRef):
        run.user_message = appended.rows[user.index]
    else:
        run.user_message_id = user
    run.assistant_message = appended.rows[assistant.index]
    if appended.probe:
        _tell(run)


def run_find(session: Session, turn_key: str) -> Run | None:
    return Run.objects.filter(session=session, turn_key=turn_key).first()


def _usage_dict(before: dict[str, Any], usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": int(before.get("prompt_tokens", 0)) + usage.prompt_tokens,
        "completion_tokens": int(before.get("completion_tokens", 0)) + usage.completion_tokens,
    }


def _tell(run: Run) -> None:
    """Tell the tenant's webhook endpoints (stored with the caller's transaction, sent
    after its commit)."""
    event_publish(tenant_id=run.tenant_id, type=_EVENTS[run.status], data=run_event_data(run))


def run_event_data(run: Run) -> dict[str, Any]:
    """A run as its webhook events carry it: ids and states (the messages are one GET away)."""
    return {
        "run": {
            "id": str(run.pk),
            "session": str(run.session_id),
            "status": run.status,
            "background": run.background,
            "required_action": run.required_action,
            "usage": run.usage or None,
            "error": run.error,
            "user_message": run.user_message_id,
            "assistant_message": run.assistant_message_id,
            "expires_at": run.expires_at.isoformat() if run.expires_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        }
    }
