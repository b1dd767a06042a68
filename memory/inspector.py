"""What the session inspector shows, read cheaply: keyset pages (no COUNT over a session's
messages or checkpoints), Redis state read live."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents.cron import next_fire
from agents.engine.ports import WorkingMemory
from agents.models import Message, Run, Schedule, Session
from agents.selectors import run_list
from memory import working
from memory.models import Checkpoint, Memory, Summary

PAGE = 50


@dataclass
class LiveState:
    """The session's state in Redis right now."""

    working_memory: WorkingMemory | None
    working_memory_ttl: int | None
    lease_holder: str | None
    lease_ttl_ms: int | None
    queued: int
    cancel_requested: str | None


@dataclass
class Page:
    rows: list[Any]
    next_cursor: Any = None  # pass back as the cursor for the next (older) page


@dataclass
class Turn:
    """One assistant reply with what its LLM received."""

    message: Message
    context: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def session_live_state(*, session: Session) -> LiveState:
    client = get_redis()
    pipe = client.pipeline(transaction=False)
    pipe.get(redis_keys.lease(session.pk))
    pipe.pttl(redis_keys.lease(session.pk))
    pipe.zcard(redis_keys.turn_queue(session.pk))
    pipe.get(redis_keys.cancel(session.pk))
    holder, pttl, queued, cancel = pipe.execute()
    return LiveState(
        working_memory=working.wm_read(session),
        working_memory_ttl=working.wm_ttl(session),
        lease_holder=holder.decode() if holder else None,
        lease_ttl_ms=int(pttl) if holder and int(pttl) >= 0 else None,
        queued=int(queued),
        cancel_requested=cancel.decode().partition("|")[2] if cancel else None,
    )


def _keyset_page(rows: QuerySet[Any], key: str, before: object | None) -> tuple[list[Any], bool]:
    """Newest first by `key`, below `before`: one page and whether older rows exist, read
    as PAGE + 1 rows instead of a COUNT."""
    if before is not None:
        rows = rows.filter(**{f"{key}__lt": before})
    page = list(rows.order_by(f"-{key}")[: PAGE + 1])
    return page[:PAGE], len(page) > PAGE


def message_page(*, session: Session, before_seq: int | None) -> Page:
    """Newest first, every status (rolled back and interrupted included)."""
    rows = Message.objects.filter(session=session, tenant_id=session.tenant_id)
    page, more = _keyset_page(rows, "seq", before_seq)
    return Page(page, page[-1].seq if more else None)


def turns_of(messages: list[Message]) -> list[Turn]:
    return [
        Turn(m, m.metadata.get("context") or {}, m.metadata.get("tool_calls") or [])
        for m in messages
        if m.role == Message.Role.ASSISTANT
    ]


def checkpoint_page(*, session: Session, before: datetime | None) -> Page:
    rows = Checkpoint.objects.filter(session=session, tenant_id=session.tenant_id)
    page, more = _keyset_page(rows, "created_at", before)
    return Page(page, page[-1].created_at.isoformat() if more else None)


def summary_list(*, session: Session) -> list[Summary]:
    return list(
        Summary.objects.filter(session=session, tenant_id=session.tenant_id).order_by("first_seq")
    )


def memory_list_learned(*, session: Session) -> list[Memory]:
    """Memories with a source in this session (JSON containment, through the user's rows)."""
    return list(
        Memory.objects.filter(
            tenant_id=session.tenant_id,
            user_id=session.user_id,
            sources__contains=[{"session_id": str(session.pk)}],
        ).order_by("-created_at")[:PAGE]
    )


def turn_context_parts(*, session: Session, turn: Turn) -> dict[str, Any]:
    """A reply's compiled context, resolved: the working-memory messages it held and the
    texts of its summaries (memories carry their text and score already)."""
    record = turn.context
    window = record.get("working_memory") or {}
    # The recorded window ends before the turn's own user message (it had no seq yet when
    # the context was compiled); that message was in the context too.
    last = turn.message.seq - 1
    first = window.get("first_seq") or last
    messages = (
        list(
            Message.objects.filter(session=session, seq__gte=first, seq__lte=last)
            .exclude(role=Message.Role.TOOL)
            .order_by("seq")
            .values("seq", "role", "content", "token_count", "status")
        )
        if record
        else []
    )
    summary_ids = [s["id"] for s in record.get("summaries", [])]
    texts = dict(Summary.objects.filter(pk__in=summary_ids).values_list("pk", "text"))
    summaries = [
        {**s, "text": texts.get(_uuid(s["id"]), "(removed since)")}
        for s in record.get("summaries", [])
    ]
    return {
        "system_prompt": session.agent.system_prompt,
        "system_prompt_tokens": record.get("system_prompt_tokens"),
        "working_memory": messages,
        "working_memory_tokens": window.get("tokens"),
        "memories": record.get("memories", []),
        "summaries": summaries,
        "extras_tokens": record.get("extras_tokens"),
        "total_tokens": record.get("total_tokens"),
    }


def _uuid(value: str) -> Any:
    try:
        return uuid.UUID(value)
    except ValueError:
        return value


RUNS_SHOWN = 20


def run_timeline(*, session: Session) -> list[Run]:
    """The session's newest runs, each with `calls`: its tool calls that waited for an
    action and the answer each got (who approved or denied, or sent the output)."""
    runs = list(run_list(session=session)[:RUNS_SHOWN])
    for run in runs:
        answers = run.action_results or {}
        run.calls = [  # type: ignore[attr-defined]
            {**call, "answer": answers.get(call["id"])}
            for call in (run.required_action or {}).get("tool_calls", [])
        ]
        if not run.calls and answers:  # type: ignore[attr-defined]
            run.calls = [  # type: ignore[attr-defined]
                {"id": call_id, "name": answer.get("name", ""), "answer": answer}
                for call_id, answer in answers.items()
            ]
    return runs


def schedule_list(*, session: Session) -> list[Schedule]:
    """The session's schedules, each with `next_run_at` (when beat fires it next)."""
    now = timezone.now()
    schedules = list(Schedule.objects.filter(session=session).order_by("created_at"))
    for schedule in schedules:
        schedule.next_run_at = (  # type: ignore[attr-defined]
            next_fire(schedule.cron, schedule.timezone, now=now) if schedule.enabled else None
        )
    return schedules
