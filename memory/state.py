"""The state backend the turn engine uses: working memory in Redis, checkpoints in PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import connection, transaction

from agents.engine.context import working_memory_budget
from agents.engine.ports import CheckpointRecord, ContextExtras, WorkingMemory
from agents.models import Agent, Message, Session
from memory.context import compile_extras
from memory.models import Checkpoint
from memory.summaries import compaction_due
from memory.tasks import compact_session, extract_memories
from memory.working import wm_fit, wm_read, wm_rebuild, wm_write

# On every turn's path: one statement, no model instance (see bench/turn_overhead.py).
_INSERT_CHECKPOINT = """
INSERT INTO memory_checkpoint (id, tenant_id, session_id, parent_id, kind, high_water_seq,
    memory_first_seq, memory_tokens, task_state, metadata, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, clock_timestamp())
"""


class PlatformState:
    def context_extras(
        self, *, session: Session, agent: Agent, query: str, budget: int, memory: WorkingMemory
    ) -> ContextExtras:
        first = next((m.seq for m in memory.messages if m.seq), None)
        return compile_extras(
            session=session, agent=agent, query=query, budget=budget, first_in_memory=first
        )

    def after_turn(
        self, *, session: Session, agent: Agent, messages: list[Message], memory: WorkingMemory
    ) -> None:
        user_ids = [m.pk for m in messages if m.role == Message.Role.USER]
        transaction.on_commit(lambda: extract_memories.delay(user_ids))
        first = next((m.seq for m in memory.messages), memory.high_water_seq + 1)
        due = compaction_due(session, first)
        if due is not None:
            session_id = str(session.pk)
            transaction.on_commit(lambda: compact_session.delay(session_id, *due))

    def load_working_memory(self, *, session: Session, agent: Agent) -> WorkingMemory:
        memory = wm_read(session)
        if memory is not None:
            return memory
        memory = rebuild_working_memory(session, agent)
        wm_write(session, memory, agent.working_memory_ttl_seconds)
        return memory

    def save_working_memory(self, *, session: Session, agent: Agent, memory: WorkingMemory) -> None:
        wm_write(session, memory, agent.working_memory_ttl_seconds)

    def fit_working_memory(self, *, memory: WorkingMemory, budget: int) -> WorkingMemory:
        return wm_fit(memory, budget)

    def write_checkpoint(
        self,
        *,
        session: Session,
        kind: str,
        memory: WorkingMemory,
        messages: list[Message],
        metadata: dict[str, Any],
    ) -> CheckpointRecord:
        checkpoint_id = uuid.uuid4()
        with connection.cursor() as cursor:
            cursor.execute(
                _INSERT_CHECKPOINT,
                [
                    checkpoint_id,
                    session.tenant_id,
                    session.pk,
                    memory.checkpoint_id,
                    kind,
                    memory.high_water_seq,
                    memory.messages[0].seq if memory.messages else None,
                    memory.tokens,
                    json.dumps(memory.task_state),
                    json.dumps(metadata),
                ],
            )
        return CheckpointRecord(checkpoint_id, kind, memory.high_water_seq)


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
