"""The tiered context of a turn: working memory (Redis), the end user's recent summaries
and the semantic memories relevant to the message, fitted into the agent's token budget.

Priority, as documented: the system prompt and the user's message always; then working
memory (the newest messages, bounded by its own share of the budget); then, within the
share kept for them (AGENTS["CONTEXT_EXTRAS_SHARE"]), semantic memories by score, then
summaries newest first. What each turn used is recorded on its reply for the inspector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from agentplatform.models import Tenant
from agents.engine.ports import ContextExtras
from agents.llm.base import ChatMessage, estimate_tokens
from agents.models import Agent, Session
from memory.conf import memory_settings
from memory.models import Summary
from memory.semantic import memory_search


@dataclass
class Parts:
    memories: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    tokens: int = 0


def compile_extras(
    *, session: Session, agent: Agent, query: str, budget: int, first_in_memory: int | None
) -> ContextExtras:
    parts = Parts()
    conf = memory_settings()
    tenant = Tenant(pk=session.tenant_id)
    if query.strip():
        hits = memory_search(
            tenant=tenant,
            user_id=session.user_id,
            query=query,
            k=conf.CONTEXT_MEMORIES,
            agent=agent,
        )
        for hit in hits:
            if hit.score < conf.MIN_SCORE:
                continue
            line = f"- {hit.memory.text}"
            if not _fits(parts, line, budget):
                break
            parts.memories.append(
                {"id": str(hit.memory.pk), "score": round(hit.score, 4), "text": hit.memory.text}
            )
    for summary in _recent_summaries(session, first_in_memory, conf.CONTEXT_SUMMARIES):
        line = f"- ({_when(summary, session)}) {summary.text}"
        if not _fits(parts, line, budget):
            break
        parts.summaries.append(
            {
                "id": str(summary.pk),
                "session": str(summary.session_id),
                "kind": summary.kind,
                "first_seq": summary.first_seq,
                "last_seq": summary.last_seq,
            }
        )
    return ContextExtras(
        messages=_render(parts),
        tokens=parts.tokens,
        record={"memories": parts.memories, "summaries": parts.summaries},
    )


def _fits(parts: Parts, line: str, budget: int) -> bool:
    tokens = estimate_tokens(line) + 1
    if parts.tokens + tokens > budget:
        return False
    parts.tokens += tokens
    parts.lines.append(line)
    return True


def _render(parts: Parts) -> list[ChatMessage]:
    memory_lines = parts.lines[: len(parts.memories)]
    summary_lines = parts.lines[len(parts.memories) :]
    blocks = []
    if memory_lines:
        blocks.append("What you know about the user:\n" + "\n".join(memory_lines))
    if summary_lines:
        blocks.append("Earlier conversations, summarised:\n" + "\n".join(summary_lines))
    return [ChatMessage("system", "\n\n".join(blocks))] if blocks else []


def _when(summary: Summary, session: Session) -> str:
    if summary.session_id == session.pk:
        return f"earlier in this conversation, messages {summary.first_seq}-{summary.last_seq}"
    return f"a previous conversation on {summary.created_at:%Y-%m-%d}"


def _recent_summaries(session: Session, first_in_memory: int | None, limit: int) -> list[Summary]:
    """This session's compactions of messages no longer in working memory, and the end
    user's other sessions' summaries: the newest `limit`."""
    own = Q(session=session, kind=Summary.Kind.COMPACTION)
    if first_in_memory is not None:
        own &= Q(last_seq__lt=first_in_memory)
    others = Q(kind=Summary.Kind.SESSION) & ~Q(session=session)
    # One query on every turn, through the (tenant, user_id, -created_at) index.
    return list(
        Summary.objects.filter(tenant_id=session.tenant_id, user_id=session.user_id)
        .filter(own | others)
        .order_by("-created_at")[:limit]
    )
