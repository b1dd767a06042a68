"""Write services for agents, sessions and messages."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

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


_RESERVE_SEQS = """
UPDATE agents_session SET next_seq = next_seq + %s, last_activity_at = now()
WHERE id = %s {fence} RETURNING next_seq
"""


def messages_append(
    *, session: Session, messages: Sequence[NewMessage], fence: uuid.UUID | None = None
) -> list[Message]:
    """Append messages with the next `seq` numbers, gapless and strictly increasing.

    The seqs are reserved by one UPDATE on the session row, which serialises concurrent
    appenders on that row. With `fence` (a turn's lease token) the same statement is the
    fencing check: it matches no row, and StaleLease is raised, once another lease took
    over. Call it inside the caller's transaction when other writes must commit with it.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        count = len(messages)
        if fence is None:
            cursor.execute(_RESERVE_SEQS.format(fence=""), [count, session.pk])
        else:
            sql = _RESERVE_SEQS.format(fence="AND lease_holder = %s")
            cursor.execute(sql, [count, session.pk, fence])
        row = cursor.fetchone()
        if row is None:
            raise StaleLease("the session's lease was taken over by another turn")
        first = row[0] - count
        rows = [
            Message(
                tenant_id=session.tenant_id,
                session=session,
                seq=first + offset,
                role=item.role,
                content=item.content,
                token_count=item.token_count,
                status=item.status,
                metadata=item.metadata or {},
            )
            for offset, item in enumerate(messages)
        ]
        return Message.objects.bulk_create(rows)
