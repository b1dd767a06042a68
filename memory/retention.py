"""Retention: what each policy deletes, as a preview and as the daily run.

A policy applies to its agent's sessions, or (the tenant's default) to the sessions of the
agents without a policy of their own; an agent's empty fields fall back to the default.
The preview and the run share one plan, so the preview counts what the run would delete now.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from agentplatform.core.audit import SYSTEM, Actor, audit_record, audited, unaudited
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agentplatform.models import Tenant
from agents.models import Agent, Message, Run, Session
from memory.models import Checkpoint, Memory, RetentionPolicy, Summary
from memory.summaries import session_summarize

POLICY_FIELDS = (
    "working_memory_ttl_seconds",
    "idle_session_days",
    "message_retention_days",
    "checkpoint_keep_last",
    "memory_retention_days",
)


@dataclass
class RetentionCounts:
    sessions_archived: int = 0
    messages: int = 0
    checkpoints: int = 0
    memories: int = 0
    summaries_written: int = 0
    runs: int = 0  # finished runs past the message retention (each holds its message's text)

    def add(self, other: RetentionCounts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class _Plan:
    policy: RetentionPolicy
    sessions: QuerySet[Session]
    now: datetime
    idle: list[Any] = field(default_factory=list)
    old_messages: int = 0
    checkpoints: list[Any] = field(default_factory=list)
    stale_memories: int = 0
    old_runs: int = 0


def policy_effective(*, policy: RetentionPolicy) -> RetentionPolicy:
    """An agent's policy with its empty fields taken from the tenant's default."""
    if policy.agent_id is None:
        return policy
    default = RetentionPolicy.objects.filter(tenant_id=policy.tenant_id, agent__isnull=True).first()
    if default is None:
        return policy
    filled = {name: getattr(policy, name) for name in POLICY_FIELDS}
    for name, value in filled.items():
        if value is None:
            filled[name] = getattr(default, name)
    return policy_with(policy, filled)


def policy_with(policy: RetentionPolicy, values: dict[str, Any]) -> RetentionPolicy:
    """An unsaved copy of `policy` with `values` (what an edit would make it), to preview."""
    copy = RetentionPolicy(pk=policy.pk, tenant_id=policy.tenant_id, agent_id=policy.agent_id)
    for name in POLICY_FIELDS:
        setattr(copy, name, values.get(name, getattr(policy, name)))
    return copy


def policy_sessions(*, policy: RetentionPolicy) -> QuerySet[Session]:
    sessions = Session.objects.filter(tenant_id=policy.tenant_id)
    if policy.agent_id is not None:
        return sessions.filter(agent_id=policy.agent_id)
    own = RetentionPolicy.objects.filter(agent_id=OuterRef("agent_id"))
    return sessions.filter(~Exists(own))


def retention_preview(*, policy: RetentionPolicy, now: datetime | None = None) -> RetentionCounts:
    """What enforcing `policy` (saved or not) would delete now; changes nothing."""
    plan = _plan(policy_effective(policy=policy), now)
    return RetentionCounts(
        sessions_archived=len(plan.idle),
        messages=plan.old_messages,
        checkpoints=len(plan.checkpoints),
        memories=plan.stale_memories,
        runs=plan.old_runs,
    )


def _plan(policy: RetentionPolicy, now: datetime | None) -> _Plan:
    plan = _Plan(policy, policy_sessions(policy=policy), now or timezone.now())
    plan.idle = list(_idle(plan).values_list("pk", flat=True))
    plan.old_messages = _old_messages(plan).count()
    plan.checkpoints = _thinned_checkpoints(plan)
    plan.stale_memories = _stale_memories(plan).count()
    plan.old_runs = _old_runs(plan).count()
    return plan


def _cutoff(plan: _Plan, days: int | None) -> datetime | None:
    return None if days is None else plan.now - timedelta(days=days)


def _idle(plan: _Plan) -> QuerySet[Session]:
    cutoff = _cutoff(plan, plan.policy.idle_session_days)
    if cutoff is None:
        return Session.objects.none()
    return plan.sessions.filter(status=Session.Status.ACTIVE, last_activity_at__lt=cutoff)


def _old_messages(plan: _Plan) -> QuerySet[Message]:
    cutoff = _cutoff(plan, plan.policy.message_retention_days)
    if cutoff is None:
        return Message.objects.none()
    return Message.objects.filter(
        tenant_id=plan.policy.tenant_id, session__in=plan.sessions, created_at__lt=cutoff
    )


_THIN = """
SELECT id FROM (
    SELECT id, turn_open,
           row_number() OVER (PARTITION BY session_id ORDER BY created_at DESC) AS newest,
           row_number() OVER (PARTITION BY session_id, date_trunc('day', created_at)
                              ORDER BY created_at DESC) AS in_day
    FROM memory_checkpoint
    WHERE tenant_id = %s AND session_id = ANY(%s)
) ranked
WHERE newest > %s AND in_day > 1 AND NOT turn_open
"""


def _old_runs(plan: _Plan) -> QuerySet[Run]:
    """Finished runs older than the message retention: a run keeps its message's text."""
    cutoff = _cutoff(plan, plan.policy.message_retention_days)
    if cutoff is None:
        return Run.objects.none()
    return Run.objects.filter(
        tenant_id=plan.policy.tenant_id,
        session__in=plan.sessions,
        created_at__lt=cutoff,
        status__in=Run.FINAL,
    )


def _thinned_checkpoints(plan: _Plan) -> list[Any]:
    """Beyond the last N of each session, all but the newest of each day; never an open
    checkpoint (an unfinished turn resumes from it)."""
    keep = plan.policy.checkpoint_keep_last
    if keep is None:
        return []
    session_ids = list(plan.sessions.values_list("pk", flat=True))
    if not session_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_THIN, [plan.policy.tenant_id, session_ids, keep])
        return [row[0] for row in cursor.fetchall()]


def _stale_memories(plan: _Plan) -> QuerySet[Memory]:
    cutoff = _cutoff(plan, plan.policy.memory_retention_days)
    if cutoff is None:
        return Memory.objects.none()
    memories = Memory.objects.filter(tenant_id=plan.policy.tenant_id, updated_at__lt=cutoff)
    memories = memories.filter(Q(last_retrieved_at__isnull=True) | Q(last_retrieved_at__lt=cutoff))
    if plan.policy.agent_id is not None:
        return memories.filter(agent_id=plan.policy.agent_id)
    own = RetentionPolicy.objects.filter(agent_id=OuterRef("agent_id"))
    return memories.filter(Q(agent__isnull=True) | ~Exists(own))


@audited("retention.enforced")
def retention_enforce(
    *, policy: RetentionPolicy, now: datetime | None = None, actor: Actor
) -> RetentionCounts:
    """Apply one policy now; audited with what it deleted."""
    plan = _plan(policy_effective(policy=policy), now)
    counts = RetentionCounts()
    for session_id in plan.idle:
        counts.summaries_written += _summarized(session_id)
        Session.objects.filter(pk=session_id).update(status=Session.Status.ARCHIVED)
        get_redis().delete(redis_keys.working_memory(session_id))
        counts.sessions_archived += 1
    counts.messages = _delete_old_messages(plan, counts)
    with transaction.atomic():
        counts.checkpoints, _ = Checkpoint.objects.filter(pk__in=plan.checkpoints).delete()
        counts.memories, _ = _stale_memories(plan).delete()
        counts.runs, _ = _old_runs(plan).delete()
    audit_record(
        tenant=Tenant(pk=policy.tenant_id),
        actor=actor,
        action="retention.enforced",
        target=policy,
        payload=asdict(counts),
    )
    return counts


def _summarized(session_id: uuid.UUID) -> int:
    """Summarise the session before retention removes it or its old messages (1 when a
    summary exists afterwards)."""
    session = Session.objects.select_related("agent").filter(pk=session_id).first()
    return int(session is not None and session_summarize(session=session) is not None)


def _delete_old_messages(plan: _Plan, counts: RetentionCounts) -> int:
    """Old messages are deleted once a summary covers them (written first when missing)."""
    old = _old_messages(plan)
    for session_id in old.values_list("session_id", flat=True).distinct():
        counts.summaries_written += _summarized(session_id)
    covered = Summary.objects.filter(
        session_id=OuterRef("session_id"),
        first_seq__lte=OuterRef("seq"),
        last_seq__gte=OuterRef("seq"),
    )
    doomed = old.filter(Exists(covered))
    sessions = list(doomed.values_list("session_id", flat=True).distinct())
    deleted, _ = doomed.delete()
    if sessions:  # their working memory is rebuilt from what PostgreSQL keeps now
        get_redis().delete(*[redis_keys.working_memory(s) for s in sessions])
    return deleted


@unaudited("part of an operator's policy save, which admin_object_save records")
def retention_apply_ttl(*, policy: RetentionPolicy) -> int:
    """Give the policy's agents its working-memory TTL; returns how many changed."""
    ttl = policy_effective(policy=policy).working_memory_ttl_seconds
    if ttl is None:
        return 0
    agents = Agent.objects.filter(tenant_id=policy.tenant_id)
    if policy.agent_id is not None:
        agents = agents.filter(pk=policy.agent_id)
    else:
        agents = agents.exclude(retention__working_memory_ttl_seconds__isnull=False)
    return agents.exclude(working_memory_ttl_seconds=ttl).update(working_memory_ttl_seconds=ttl)


@unaudited("each policy it enforces records its own event")
def retention_run_all(*, now: datetime | None = None) -> RetentionCounts:
    """Beat: every policy of every tenant, enforced by the platform."""
    total = RetentionCounts()
    for policy in RetentionPolicy.objects.order_by("tenant_id", "agent_id").iterator():
        total.add(retention_enforce(policy=policy, now=now, actor=SYSTEM))
    return total


__all__ = [
    "RetentionCounts",
    "retention_apply_ttl",
    "retention_enforce",
    "retention_preview",
    "retention_run_all",
]
