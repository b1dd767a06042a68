"""The state backend the turn engine uses: working memory in Redis, checkpoints in PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from psycopg.types.json import Jsonb

from agentplatform.infra import jsontext
from agents.engine.context import working_memory_budget
from agents.engine.ports import (
    CheckpointRequest,
    ClaimRead,
    ContextExtras,
    TurnProgress,
    WorkingMemory,
    WorkingMemoryRead,
)
from agents.models import Agent, Message, Session
from agents.services import (
    NOW,
    Appended,
    CompanionRow,
    CompanionUpdate,
    NewMessage,
    SeqRef,
    messages_append_with,
)
from memory.context import LookupRead, compile_extras
from memory.followups import compaction_request, extraction_request
from memory.models import Checkpoint
from memory.summaries import compaction_range
from memory.working import wm_fit, wm_read, wm_read_batched, wm_rebuild, wm_write


class PlatformState:
    def context_extras(
        self,
        *,
        session: Session,
        agent: Agent,
        query: str,
        budget: int,
        memory: WorkingMemory,
        read: ClaimRead | None = None,
    ) -> ContextExtras:
        return compile_extras(
            session=session,
            agent=agent,
            query=query,
            budget=budget,
            first_in_memory=next(iter(memory.written_seqs()), None),
            read=read if isinstance(read, LookupRead) else None,
        )

    def context_read(self, *, session: Session, memory: WorkingMemory) -> ClaimRead:
        return LookupRead(session, next(iter(memory.written_seqs()), None))

    def after_turn(
        self,
        *,
        session: Session,
        agent: Agent,
        messages: list[Message],
        memory: WorkingMemory,
        extras: ContextExtras,
    ) -> None:
        user_ids = [m.pk for m in messages if m.role == Message.Role.USER]
        tenant_id = session.tenant_id
        transaction.on_commit(lambda: extraction_request(tenant_id, user_ids))
        first = next(iter(memory.written_seqs()), memory.high_water_seq + 1)
        due = compaction_range(extras.compacted_through, first)
        if due is not None:
            session_id = session.pk
            transaction.on_commit(lambda: compaction_request(session_id, *due))

    def load_working_memory(
        self, *, session: Session, agent: Agent, read: WorkingMemoryRead | None = None
    ) -> WorkingMemory:
        memory = read.memory if read is not None and read.done else wm_read(session)
        if memory is not None:
            return memory
        memory = rebuild_working_memory(session, agent)
        wm_write(session, memory, agent.working_memory_ttl_seconds)
        return memory

    def read_working_memory(self, *, session: Session) -> WorkingMemoryRead:
        return wm_read_batched(session)

    def save_working_memory(self, *, session: Session, agent: Agent, memory: WorkingMemory) -> None:
        wm_write(session, memory, agent.working_memory_ttl_seconds)

    def fit_working_memory(self, *, memory: WorkingMemory, budget: int) -> WorkingMemory:
        return wm_fit(memory, budget)

    def turn_write(
        self,
        *,
        session: Session,
        fence: uuid.UUID,
        messages: list[NewMessage],
        checkpoint: CheckpointRequest | None,
        update: CompanionUpdate | None = None,
    ) -> tuple[Appended, uuid.UUID | None]:
        # The checkpoint is written by the statement that appends the turn's messages: one
        # round trip, no model instance (bench/turn_overhead.py). Messages are referenced by
        # seq, never copied, so storage grows linearly with turns.
        row, checkpoint_id = None, None
        if checkpoint is not None:
            checkpoint_id = uuid.uuid4()
            row = _checkpoint_row(checkpoint_id, session, checkpoint, len(messages))
        appended = messages_append_with(
            session=session, fence=fence, messages=messages, companion=row, update=update
        )
        return appended, checkpoint_id

    def turn_progress(self, *, session: Session, turn_key: str) -> TurnProgress | None:
        # Through the (session, turn_key) index: a turn is found by its latest checkpoint,
        # which knows the turn's first and last message. A turn that wrote no checkpoint
        # (it failed before any, or its policy wrote none) runs afresh.
        latest = (
            Checkpoint.objects.filter(session=session, turn_key=turn_key)
            .order_by("-created_at")
            .values("pk", "turn_open", "task_state", "turn_first_seq", "high_water_seq")
            .first()
        )
        if latest is None or latest["turn_first_seq"] is None:
            return None
        messages = list(
            Message.objects.filter(
                session=session,
                tenant_id=session.tenant_id,
                seq__gte=latest["turn_first_seq"],
                seq__lte=latest["high_water_seq"],
            ).order_by("seq")
        )
        if not messages:
            return None
        if not latest["turn_open"]:
            return TurnProgress(messages)
        return TurnProgress(messages, latest["pk"], latest["task_state"])

    def open_turns(self, *, since: datetime, until: datetime) -> list[tuple[uuid.UUID, str]]:
        # Through the partial index of open checkpoints; a turn that went on since has a
        # newer checkpoint for the same key.
        rows = Checkpoint.objects.filter(
            turn_open=True, created_at__gte=since, created_at__lt=until
        )
        newer = Checkpoint.objects.filter(
            session_id=OuterRef("session_id"),
            turn_key=OuterRef("turn_key"),
            created_at__gt=OuterRef("created_at"),
        )
        return [
            (session_id, turn_key)
            for session_id, turn_key in rows.filter(~Exists(newer))
            .order_by("created_at")
            .values_list("session_id", "turn_key")[:500]
        ]


def _latest_checkpoint(session: Session) -> dict[str, Any] | None:
    row = (
        Checkpoint.objects.filter(session=session)
        .order_by("-created_at")
        .values("pk", "task_state")
        .first()
    )
    return dict(row) if row else None


def rebuild_working_memory(session: Session, agent: Agent) -> WorkingMemory:
    """Working memory as PostgreSQL alone says it is (what a Redis miss rebuilds)."""
    latest = _latest_checkpoint(session)
    return wm_rebuild(
        session,
        working_memory_budget(agent),
        latest["task_state"] if latest else {},
        str(latest["pk"]) if latest else None,
    )


def _checkpoint_row(
    checkpoint_id: uuid.UUID, session: Session, request: CheckpointRequest, new_messages: int
) -> CompanionRow:
    memory = request.memory
    first = memory.messages[0].seq if memory.messages else None
    return CompanionRow(
        "memory_checkpoint",
        {
            "id": checkpoint_id,
            "tenant_id": session.tenant_id,
            "session_id": session.pk,
            "parent_id": memory.checkpoint_id,
            "kind": request.kind,
            "high_water_seq": SeqRef(new_messages - 1),
            "memory_first_seq": first,
            "memory_tokens": memory.tokens,
            "task_state": Jsonb(memory.task_state, dumps=jsontext.dumps_bytes),
            "metadata": Jsonb(request.metadata, dumps=jsontext.dumps_bytes),
            "side_effects": Jsonb(request.side_effects, dumps=jsontext.dumps_bytes),
            "turn_key": request.turn_key,
            "turn_open": request.turn_open,
            "turn_first_seq": request.turn_first_seq,
            "created_at": NOW,
        },
    )
