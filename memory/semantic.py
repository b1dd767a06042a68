"""Semantic memory: facts about end users in pgvector, written with deduplication and
searched per tenant and end user.

Search plan: an end user's memories are a small partition (a btree index finds them), so
up to EXACT_SCAN_LIMIT rows they are scored exactly and sorted, which is exact and fast.
A filtered HNSW scan over a large table silently returns too few rows; for a partition
larger than the limit we use HNSW with pgvector 0.8's iterative scan and re-rank.
bench/memory_search.py measures both against exact search.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from django.db import connection, connections, transaction
from django.utils import timezone

from agentplatform.core.audit import Actor, audit_delete, audit_record, audited
from agentplatform.core.dbrouter import read_alias
from agentplatform.models import Tenant
from agents.models import Agent
from memory.conf import memory_settings
from memory.embeddings import get_embedder
from memory.extraction import about_the_user
from memory.facts import key_facts
from memory.models import Memory

MAX_TEXT = 2_000


@dataclass(frozen=True)
class Source:
    kind: str  # "message" | "api" | "operator"
    author: str = ""
    message_id: int | None = None
    session_id: str | None = None

    def as_dict(self, at: datetime) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": self.kind, "at": at.isoformat()}
        if self.author:
            entry["author"] = self.author
        if self.message_id is not None:
            entry["message_id"] = self.message_id
            entry["session_id"] = self.session_id
        return entry


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:MAX_TEXT]


@audited("memory.created", "memory.source_added")
def memory_upsert(
    *,
    tenant: Tenant,
    user_id: str,
    text: str,
    source: Source,
    agent: Agent | None = None,
    actor: Actor,
) -> tuple[Memory, bool]:
    """Store a fact about an end user, or add `source` to the memory that already says it.

    Returns (memory, created). Writers of one end user are serialised by an advisory lock,
    so the same fact arriving twice at once is still stored once. The event keeps no text:
    the trail outlives erasure, so it holds no personal data.
    """
    text = normalise(text)
    if not text:
        raise ValueError("A memory needs text.")
    embedder = get_embedder()
    vector = embedder.embed([text])[0]
    now = timezone.now()
    with transaction.atomic():
        _lock_user(tenant, user_id)
        twin = _near_duplicate(tenant, user_id, agent, text, vector)
        if twin is not None:
            sources = list(twin.sources)
            entry = source.as_dict(now)
            if not any(_same_source(entry, known) for known in sources):
                sources.append(entry)
            twin.sources = sources
            twin.save(update_fields=["sources", "updated_at"])
            _audit_upsert(twin, source, actor, created=False)
            return twin, False
        memory = Memory.objects.create(
            tenant=tenant,
            user_id=user_id,
            agent=agent,
            text=text,
            embedding=vector,
            embedding_model=embedder.name,
            sources=[source.as_dict(now)],
            author=source.author,
        )
        _audit_upsert(memory, source, actor, created=True)
        return memory, True


def _audit_upsert(memory: Memory, source: Source, actor: Actor, *, created: bool) -> None:
    action = "memory.created" if created else "memory.source_added"
    payload = {"source": source.kind, "message_id": source.message_id}
    audit_record(
        tenant=Tenant(pk=memory.tenant_id),
        actor=actor,
        action=action,
        target=memory,
        payload=payload,
    )


@audited("memory.deleted")
def memory_delete(*, memory: Memory, actor: Actor) -> None:
    audit_delete(
        memory, actor=actor, action="memory.deleted", payload={"sources": len(memory.sources)}
    )


def _lock_user(tenant: Tenant, user_id: str) -> None:
    key = zlib.crc32(f"{tenant.pk}:{user_id}".encode())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [7001, key - 2**31])


def _same_source(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("message_id") is not None:
        return a.get("message_id") == b.get("message_id")
    return False


def _near_duplicate(
    tenant: Tenant, user_id: str, agent: Agent | None, text: str, vector: np.ndarray
) -> Memory | None:
    hits = _exact_search(tenant, user_id, vector, k=3, agent=agent, agent_exact=True)
    threshold = memory_settings().DEDUP_THRESHOLD
    facts = key_facts(text)
    for hit in hits:
        if hit.score >= threshold and key_facts(hit.memory.text) == facts:
            return hit.memory
    return None


def memory_search(
    *,
    tenant: Tenant,
    user_id: str,
    query: str,
    k: int = 5,
    agent: Agent | None = None,
    touch: bool = True,
    partition_size: int | None = None,
) -> list[Hit]:
    """The k memories of this end user most similar to `query` (score = cosine similarity).

    With `agent`, memories of that agent and the user's agent-independent ones. A caller
    that already counted the partition (the turn's lookup) passes `partition_size`.
    """
    size = _partition_size(tenant, user_id) if partition_size is None else partition_size
    if size == 0:  # every turn asks; most end users have nothing yet: skip the embedding
        return []
    vector = get_embedder().embed([about_the_user(query)])[0]
    if size <= memory_settings().EXACT_SCAN_LIMIT:
        hits = _exact_search(tenant, user_id, vector, k=k, agent=agent)
    else:
        hits = _hnsw_search(tenant, user_id, vector, k=k, agent=agent)
    if touch and hits:
        Memory.objects.filter(pk__in=[h.memory.pk for h in hits]).update(
            last_retrieved_at=timezone.now()
        )
    return hits


def _partition_size(tenant: Tenant, user_id: str) -> int:
    limit = memory_settings().EXACT_SCAN_LIMIT
    # Counting stops one past the limit: the plan only needs to know which side it is on.
    return Memory.objects.filter(tenant=tenant, user_id=user_id, status=Memory.Status.ACTIVE)[
        : limit + 1
    ].count()


_FILTER = "tenant_id = %s AND user_id = %s AND status = 'active'"


def _agent_clause(agent: Agent | None, exact: bool) -> tuple[str, list[Any]]:
    if agent is None:
        return ("AND agent_id IS NULL", []) if exact else ("", [])
    if exact:
        return "AND agent_id = %s", [agent.pk]
    return "AND (agent_id = %s OR agent_id IS NULL)", [agent.pk]


def _exact_search(
    tenant: Tenant,
    user_id: str,
    vector: np.ndarray,
    *,
    k: int,
    agent: Agent | None,
    agent_exact: bool = False,
) -> list[Hit]:
    clause, params = _agent_clause(agent, agent_exact)
    # "+ 0" makes the sort key an expression the HNSW index cannot serve, so the planner
    # filters through the btree index and sorts the partition exactly.
    sql = (
        f"SELECT id, 1 - (embedding <=> %s::vector) AS score FROM memory_memory "  # noqa: S608
        f"WHERE {_FILTER} {clause} ORDER BY (embedding <=> %s::vector) + 0 LIMIT %s"
    )
    literal = vector_literal(vector)
    return _run(sql, [literal, tenant.pk, user_id, *params, literal, k])


def _hnsw_search(
    tenant: Tenant, user_id: str, vector: np.ndarray, *, k: int, agent: Agent | None
) -> list[Hit]:
    clause, params = _agent_clause(agent, False)
    sql = (
        f"SELECT id, 1 - (embedding <=> %s::vector) AS score FROM memory_memory "  # noqa: S608
        f"WHERE {_FILTER} {clause} ORDER BY embedding <=> %s::vector LIMIT %s"
    )
    alias = read_alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        # Without iterative scans a filtered HNSW search stops after ef_search candidates
        # and returns too few rows; relaxed order is re-sorted by score below.
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        # set_config, not SET: SET takes no bound parameters (server-side binding is on).
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true)", [str(memory_settings().HNSW_EF_SEARCH)]
        )
        literal = vector_literal(vector)
        hits = _run(sql, [literal, tenant.pk, user_id, *params, literal, k], alias)
    return sorted(hits, key=lambda hit: -hit.score)


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


def _run(sql: str, params: list[Any], alias: str | None = None) -> list[Hit]:
    """The hits of a search, read where this context's reads go (the replica inside
    `reads_may_lag()`), the memories' rows from the same place."""
    alias = alias or read_alias()
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    memories = Memory.objects.using(alias).in_bulk([row[0] for row in rows])
    return [Hit(memories[row[0]], float(row[1])) for row in rows if row[0] in memories]
