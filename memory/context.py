"""The tiered context of a turn: working memory (Redis), the end user's recent summaries
and the semantic memories relevant to the message, fitted into the agent's token budget.

Priority, as documented: the system prompt and the user's message always; then working
memory (the newest messages, bounded by its own share of the budget); then, within the
share kept for them (AGENTS["CONTEXT_EXTRAS_SHARE"]), semantic memories by score, then
summaries newest first. What each turn used is recorded on its reply for the inspector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection

from agentplatform.models import Tenant
from agents.engine.ports import ContextExtras
from agents.llm.base import ChatMessage, estimate_tokens
from agents.models import Agent, Session
from memory.conf import memory_settings
from memory.semantic import memory_search


class SummaryRow(NamedTuple):
    id: str
    session_id: str
    kind: str
    first_seq: int
    last_seq: int
    text: str
    created_at: datetime


@dataclass
class Lookup:
    """What a turn needs from PostgreSQL before it calls the LLM, read in one round trip."""

    memories: int  # the end user's active memories, counted up to EXACT_SCAN_LIMIT + 1
    compacted_through: int  # this session's messages up to here are summarised
    summaries: list[SummaryRow]


@dataclass
class Parts:
    memories: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    tokens: int = 0


def compile_extras(
    *,
    session: Session,
    agent: Agent,
    query: str,
    budget: int,
    first_in_memory: int | None,
    read: LookupRead | None = None,
) -> ContextExtras:
    """The extras of a context whose oldest message in working memory is `first_in_memory`;
    `read` is the lookup read with the lease's claim, used when it was for this context."""
    parts = Parts()
    conf = memory_settings()
    if read is not None and read.lookup is not None and read.first_in_memory == first_in_memory:
        lookup = read.lookup
    else:
        lookup = turn_lookup(session, first_in_memory)
    if query.strip() and lookup.memories:
        hits = memory_search(
            tenant=Tenant(pk=session.tenant_id),
            user_id=session.user_id,
            query=query,
            k=conf.CONTEXT_MEMORIES,
            agent=agent,
            partition_size=lookup.memories,
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
    for summary in lookup.summaries:
        line = f"- ({_when(summary, session)}) {summary.text}"
        if not _fits(parts, line, budget):
            break
        parts.summaries.append(
            {
                "id": summary.id,
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
        compacted_through=lookup.compacted_through,
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


def _when(summary: SummaryRow, session: Session) -> str:
    if summary.session_id == str(session.pk):
        return f"earlier in this conversation, messages {summary.first_seq}-{summary.last_seq}"
    return f"a previous conversation on {summary.created_at:%Y-%m-%d}"


# Three lookups, one statement: the size of the end user's memory partition (counting
# stops one past the exact-scan limit: the search plan only needs to know which side it is
# on), how far this session is compacted, and the newest summaries for the context: this
# session's compactions of messages no longer in working memory and the end user's other
# sessions' summaries, through the (tenant, user_id, -created_at) index. Three scalar
# expressions, so that the lease's claim can read them too (LookupRead).
_LOOKUP_COLUMNS = """
  (SELECT count(*) FROM (
     SELECT 1 FROM memory_memory
     WHERE tenant_id = %(tenant)s AND user_id = %(user)s AND status = 'active' LIMIT %(cap)s
   ) partition),
  (SELECT coalesce(max(last_seq), 0) FROM memory_summary
   WHERE session_id = %(session)s AND kind = 'compaction'),
  (SELECT coalesce(json_agg(recent), '[]') FROM (
     SELECT id, session_id, kind, first_seq, last_seq, text, created_at FROM memory_summary
     WHERE tenant_id = %(tenant)s AND user_id = %(user)s
       AND ((session_id = %(session)s AND kind = 'compaction'
             AND (%(first)s::int IS NULL OR last_seq < %(first)s::int))
            OR (session_id <> %(session)s AND kind = 'session'))
     ORDER BY created_at DESC LIMIT %(limit)s
   ) recent)
"""


def _lookup_params(session: Session, first_in_memory: int | None) -> dict[str, Any]:
    conf = memory_settings()
    return {
        "tenant": session.tenant_id,
        "user": session.user_id,
        "session": session.pk,
        "cap": conf.EXACT_SCAN_LIMIT + 1,
        "first": first_in_memory,
        "limit": conf.CONTEXT_SUMMARIES,
    }


def turn_lookup(session: Session, first_in_memory: int | None) -> Lookup:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_LOOKUP_COLUMNS}", _lookup_params(session, first_in_memory))
        return _lookup_from(cursor.fetchone())


@dataclass
class LookupRead:
    """`turn_lookup` for a context starting at `first_in_memory`, read by another statement
    (the lease's claim: agents.engine.concurrency.ClaimRead), so a turn makes one round trip
    fewer. `lookup` once that statement ran."""

    session: Session
    first_in_memory: int | None
    lookup: Lookup | None = None

    @property
    def columns(self) -> str:
        return _LOOKUP_COLUMNS

    @property
    def params(self) -> dict[str, Any]:
        return _lookup_params(self.session, self.first_in_memory)

    def take(self, values: tuple[Any, ...]) -> None:
        self.lookup = _lookup_from(values)


def _lookup_from(values: tuple[Any, ...]) -> Lookup:
    memories, compacted_through, summaries = values
    rows = json.loads(summaries) if isinstance(summaries, str) else summaries
    return Lookup(
        memories=int(memories),
        compacted_through=int(compacted_through),
        summaries=[
            SummaryRow(**{**row, "created_at": datetime.fromisoformat(row["created_at"])})
            for row in rows
        ],
    )
