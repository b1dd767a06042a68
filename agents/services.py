"""Write services for agents, sessions and messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

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


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str
    token_count: int = 0
    status: str = Message.Status.ACTIVE
    metadata: dict[str, Any] | None = None


def messages_append(*, session: Session, messages: Sequence[NewMessage]) -> list[Message]:
    """Append messages with the next `seq` numbers, gapless and strictly increasing.

    The seqs are reserved by an UPDATE on the session row, which serialises concurrent
    appenders on that row; it must run inside the caller's transaction when the caller has
    other writes that must commit with the messages.
    """
    with transaction.atomic():
        count = len(messages)
        Session.objects.filter(pk=session.pk).update(
            next_seq=F("next_seq") + count, last_activity_at=timezone.now()
        )
        next_seq = Session.objects.values_list("next_seq", flat=True).get(pk=session.pk)
        first = next_seq - count
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
