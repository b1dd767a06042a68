"""Working memory in Redis: the newest messages of a session that fit its token budget.

Stored as one JSON value per session with the agent's TTL. On a miss (expired, evicted,
Redis restarted) it is rebuilt from PostgreSQL by the same rule that trims it, so a rebuilt
working memory equals the one that was lost.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

from agentplatform.infra import jsontext, redis_keys
from agentplatform.infra.redis import deferred, get_redis
from agents.engine.ports import WorkingMemory, WorkingMemoryRead, WorkingMessage
from agents.models import Message, Session

CONTEXT_STATUSES = (Message.Status.ACTIVE, Message.Status.INTERRUPTED)
CONTEXT_ROLES = (Message.Role.USER, Message.Role.ASSISTANT)
REBUILD_BATCH = 200


def wm_read(session: Session) -> WorkingMemory | None:
    raw = cast(bytes | None, get_redis().get(redis_keys.working_memory(session.pk)))
    return None if raw is None else WorkingMemory.from_dict(jsontext.loads(raw))


def wm_read_batched(session: Session) -> WorkingMemoryRead:
    """`wm_read` within the open `write_batch()`: the result arrives when it is sent."""
    read = WorkingMemoryRead()

    def answered(raw: bytes | None) -> None:
        read.memory = None if raw is None else WorkingMemory.from_dict(jsontext.loads(raw))
        read.done = True

    deferred("get", redis_keys.working_memory(session.pk), then=answered)
    return read


def wm_write(session: Session, memory: WorkingMemory, ttl_seconds: int) -> None:
    payload = jsontext.dumps_bytes(memory.as_dict())
    deferred("set", redis_keys.working_memory(session.pk), payload, ex=ttl_seconds)


def wm_fit(memory: WorkingMemory, budget: int) -> WorkingMemory:
    """Keep the newest messages whose tokens fit `budget`, stopping at the first misfit.

    Stopping (rather than skipping) keeps the rule consistent: trimming after each append
    gives the same result as trimming the whole history at once.
    """
    kept: list[WorkingMessage] = []
    used = 0
    for message in reversed(memory.messages):
        if used + message.tokens > budget:
            break
        kept.append(message)
        used += message.tokens
    kept.reverse()
    return replace(memory, messages=kept)


def wm_rebuild(
    session: Session, budget: int, task_state: dict, checkpoint_id: str | None = None
) -> WorkingMemory:
    """Read the newest context messages from PostgreSQL, newest first, until `budget`.

    It reads in batches so its cost depends on the budget, not on the conversation's length.
    """
    kept: list[WorkingMessage] = []
    used = 0
    high_water = 0
    rows = (
        Message.objects.filter(session=session, tenant_id=session.tenant_id)
        .order_by("-seq")
        .values_list("seq", "role", "content", "token_count", "status")
    )
    offset = 0
    while True:
        batch = list(rows[offset : offset + REBUILD_BATCH])
        if not batch:
            break
        for seq, role, content, tokens, status in batch:
            high_water = max(high_water, seq)
            # The same rule as a live turn's: the conversation, not the tool exchanges.
            if status not in CONTEXT_STATUSES or role not in CONTEXT_ROLES or not content:
                continue
            if used + tokens > budget:
                kept.reverse()
                return WorkingMemory(kept, task_state, high_water, checkpoint_id)
            kept.append(WorkingMessage(seq, role, content, tokens))
            used += tokens
        offset += REBUILD_BATCH
    kept.reverse()
    return WorkingMemory(kept, task_state, high_water, checkpoint_id)


def wm_ttl(session: Session) -> int | None:
    """Seconds the cached working memory has left (None when it is not cached)."""
    ttl = cast(int, get_redis().ttl(redis_keys.working_memory(session.pk)))
    return ttl if ttl >= 0 else None
