"""Write services for agents, sessions and messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection

from agentplatform.models import Tenant
from agents.models import Agent, Message, Session

AGENT_EDITABLE = (
    "name",
    "system_prompt",
    "llm",
    "context_token_budget",
    "working_memory_ttl_seconds",
    "checkpoint_policy",
    "double_text_policy",
)


def agent_create(*, tenant: Tenant, name: str, **fields: Any) -> Agent:
    agent = Agent(tenant=tenant, name=name, **fields)
    agent.full_clean()
    agent.save()
    return agent


def agent_update(*, agent: Agent, **fields: Any) -> Agent:
    for name, value in fields.items():
        if name not in AGENT_EDITABLE:
            raise ValueError(f"{name} is not editable")
        setattr(agent, name, value)
    agent.full_clean()
    agent.save()
    return agent


def agent_delete(*, agent: Agent) -> None:
    """Delete the agent and, with it, its sessions and their messages."""
    agent.delete()


def session_open(
    *, tenant: Tenant, agent: Agent, user_id: str, metadata: dict[str, Any] | None = None
) -> Session:
    if agent.tenant_id != tenant.pk:
        raise ValueError("agent belongs to another tenant")
    session = Session(tenant=tenant, agent=agent, user_id=user_id, metadata=metadata or {})
    session.full_clean()
    session.save()
    return session


def session_delete(*, session: Session) -> None:
    session.delete()


class StaleLease(Exception):
    """The writer's lease was taken over: its fencing token no longer matches the session."""


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str
    token_count: int = 0
    status: str = Message.Status.ACTIVE
    metadata: dict[str, Any] | None = None


# One statement, one round trip: reserve the seqs on the session row (the row lock orders
# concurrent appenders) and insert the messages with them. With a fence, a taken-over lease
# matches no session row, so nothing is inserted.
_APPEND = """
WITH reserved AS (
    UPDATE agents_session SET next_seq = next_seq + %(count)s, last_activity_at = now()
    WHERE id = %(session)s {fence}
    RETURNING next_seq - %(count)s AS first_seq
)
INSERT INTO agents_message
    (tenant_id, session_id, seq, role, content, token_count, status, metadata, created_at)
SELECT %(tenant)s, %(session)s, reserved.first_seq + m.ord - 1, m.role, m.content, m.tokens,
       m.status, m.metadata::jsonb, now()
FROM reserved, unnest(
    %(roles)s::text[], %(contents)s::text[], %(tokens)s::int[], %(statuses)s::text[],
    %(metadata)s::text[]
) WITH ORDINALITY AS m(role, content, tokens, status, metadata, ord)
ORDER BY m.ord
RETURNING id, seq, created_at
"""


def messages_append(
    *, session: Session, messages: Sequence[NewMessage], fence: uuid.UUID | None = None
) -> list[Message]:
    """Append messages with the next `seq` numbers, gapless and strictly increasing.

    The seqs are reserved by an UPDATE of the session row in the same statement as the
    insert, which serialises concurrent appenders on that row. With `fence` (a turn's lease
    token) that UPDATE is also the fencing check: once another lease took over it matches
    no row, nothing is written and StaleLease is raised. Run it inside the caller's
    transaction when other writes must commit with the messages.
    """
    params: dict[str, Any] = {
        "count": len(messages),
        "session": session.pk,
        "tenant": session.tenant_id,
        "fence": fence,
        "roles": [m.role for m in messages],
        "contents": [m.content for m in messages],
        "tokens": [m.token_count for m in messages],
        "statuses": [m.status for m in messages],
        "metadata": [json.dumps(m.metadata or {}) for m in messages],
    }
    sql = _APPEND.format(fence="AND lease_holder = %(fence)s" if fence else "")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = sorted(cursor.fetchall(), key=lambda row: row[1])
    if len(inserted) != len(messages):
        raise StaleLease("the session's lease was taken over by another turn")
    return [
        Message(
            id=row_id,
            tenant_id=session.tenant_id,
            session=session,
            seq=seq,
            role=item.role,
            content=item.content,
            token_count=item.token_count,
            status=item.status,
            metadata=item.metadata or {},
            created_at=created_at,
        )
        for (row_id, seq, created_at), item in zip(inserted, messages, strict=True)
    ]
