"""Read paths of the memory tiers, scoped to a tenant."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from agentplatform.core.tenancy import access_object
from agentplatform.models import Tenant
from agents.engine.context import extras_budget, working_memory_budget
from agents.engine.payloads import compiled_record
from agents.models import Message, Session
from memory import working
from memory.models import Checkpoint, Memory, Summary
from memory.state import PlatformState


def memory_list(*, tenant: Tenant, user_id: str | None = None) -> QuerySet[Memory]:
    memories: QuerySet[Memory] = Memory.objects.for_tenant(tenant).filter(
        status=Memory.Status.ACTIVE
    )
    return memories.filter(user_id=user_id) if user_id else memories


def access_memory(*, tenant: Tenant, id: object) -> Memory:
    return access_object(Memory, tenant=tenant, id=id)  # type: ignore[arg-type]


def checkpoint_list(*, session: Session) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.filter(session=session, tenant_id=session.tenant_id)


def access_checkpoint(*, tenant: Tenant, id: object) -> Checkpoint:
    return access_object(Checkpoint, tenant=tenant, id=id)  # type: ignore[arg-type]


def summary_list(*, session: Session) -> QuerySet[Summary]:
    return Summary.objects.filter(session=session, tenant_id=session.tenant_id).order_by(
        "kind", "first_seq"
    )


def next_turn_context(*, session: Session, query: str | None) -> dict[str, Any]:
    """What the next turn of `session` would put before the LLM (query: the message it
    would answer; by default the last user message)."""
    agent = session.agent
    state = PlatformState()
    memory = state.load_working_memory(session=session, agent=agent)
    if query is None:
        query = (
            Message.objects.filter(session=session, role=Message.Role.USER)
            .order_by("-seq")
            .values_list("content", flat=True)
            .first()
            or ""
        )
    extras = state.context_extras(
        session=session, agent=agent, query=query, budget=extras_budget(agent), memory=memory
    )
    record = compiled_record(agent, memory, extras)
    return {
        "query": query,
        "system_prompt": agent.system_prompt,
        "working_memory": {
            "messages": [m.as_dict() for m in memory.messages],
            "task_state": memory.task_state,
            "ttl_seconds": working.wm_ttl(session),
            "budget_tokens": working_memory_budget(agent),
        },
        "summaries": record.get("summaries", []),
        "memories": record.get("memories", []),
        "tokens": {
            "system_prompt": record["system_prompt_tokens"],
            "working_memory": record["working_memory"]["tokens"],
            "memories_and_summaries": record["extras_tokens"],
            "total": record["total_tokens"],
            "budget": agent.context_token_budget,
        },
    }
