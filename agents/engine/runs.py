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
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from agentplatform.core.webhooks import EventType, event_publish
from agents.llm.base import Usage
from agents.models import Message, Run, Session

# The webhook event of each status a run reaches (its tenant's endpoints may listen).
_EVENTS: dict[str, str] = {
    Run.Status.REQUIRES_ACTION: EventType.RUN_REQUIRES_ACTION,
    Run.Status.COMPLETED: EventType.RUN_COMPLETED,
    Run.Status.FAILED: EventType.RUN_FAILED,
    Run.Status.CANCELLED: EventType.RUN_CANCELLED,
    Run.Status.EXPIRED: EventType.RUN_EXPIRED,
}


# The row of a transport's run is written without waiting for the WAL flush, as the lease
# claim is: if a crash loses it, the turn it describes was cut off too, and the turn's own
# messages commit durably.
_INSERT = """
WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO agents_run (id, tenant_id, session_id, status, background, content, metadata,
    turn_key, action_results, usage, created_at, started_at)
SELECT %s, %s, %s, 'in_progress', false, %s, %s::jsonb, %s, '{}'::jsonb, '{}'::jsonb,
    now(), now()
FROM async
"""


def run_open(
    *,
    session: Session,
    content: str,
    turn_key: str,
    metadata: dict[str, Any] | None = None,
    retried: bool = False,
) -> Run:
    """The run of a turn its caller waits on, in progress from now. A turn `retried` under
    its key (an Idempotency-Key, a client_message_id) keeps the run it began with."""
    existing = Run.objects.filter(session=session, turn_key=turn_key).first() if retried else None
    if existing is not None:
        return existing
    run = Run(
        id=uuid.uuid4(),
        tenant_id=session.tenant_id,
        session=session,
        status=Run.Status.IN_PROGRESS,
        content=content,
        metadata=metadata or {},
        turn_key=turn_key,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT,
            [run.id, session.tenant_id, session.pk, content, json.dumps(run.metadata), turn_key],
        )
    return run


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
