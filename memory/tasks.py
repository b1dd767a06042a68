"""Celery tasks of the memory tiers. Thin: ids in, the row loaded (its tenant with it), a
service called; each is safe to run twice. The per-end-user tasks keep no result in the
result backend (`ignore_result`), so erasing an end user leaves nothing of theirs there."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from agentplatform.core import rls
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents.models import Message, Session
from memory import followups
from memory.accounting import storage_sample_all
from memory.conf import memory_settings
from memory.learning import memories_extract
from memory.models import Summary
from memory.retention import retention_run_all
from memory.summaries import session_summarize, summary_create


@shared_task(name="memory.extract_memories", acks_late=True, ignore_result=True)
def extract_memories(message_ids: list[int]) -> int:
    """Facts the end user stated in these messages become memories; each tenant's
    messages in that tenant's scope."""
    with rls.cross_tenant(rls.CrossTenantReason.TASK_DISPATCH, "messages"):
        tenant_ids = set(
            Message.objects.filter(pk__in=message_ids).values_list("tenant_id", flat=True)
        )
    stored = 0
    for tenant_id in tenant_ids:
        with rls.tenant_scope(tenant_id):
            stored += memories_extract(message_ids=message_ids)
    return stored


@shared_task(name=followups.EXTRACT_PENDING, acks_late=True, ignore_result=True)
def extract_pending(tenant_id: str) -> int:
    """The tenant's pending messages (memory/followups.py); while another run drains them,
    look again once it is likely done."""
    stored = followups.pending_drain(tenant_id=tenant_id)
    if stored is None:
        extract_pending.apply_async((tenant_id,), countdown=followups.SCHEDULED_TTL_SECONDS)
        return 0
    return stored


@shared_task(name="memory.extract_pending_sweep")
def extract_pending_sweep() -> int:
    """Beat: schedule extraction for tenants whose ids wait with no task queued."""
    tenants = followups.pending_tenants_unscheduled()
    for tenant_id in tenants:
        extract_pending.delay(tenant_id)
    return len(tenants)


@shared_task(name=followups.COMPACT_SESSION, acks_late=True, ignore_result=True)
def compact_session(session_id: str, first_seq: int, last_seq: int) -> str | None:
    try:
        session = _session(session_id)
        if session is None:
            return None
        with rls.tenant_scope(session.tenant_id):
            summary = summary_create(
                session=session,
                kind=Summary.Kind.COMPACTION,
                first_seq=first_seq,
                last_seq=last_seq,
            )
        return str(summary.pk) if summary else None
    finally:
        # The next turn may ask again (memory/followups.py deduplicates while this runs).
        get_redis().delete(redis_keys.compaction_scheduled(session_id))


@shared_task(name="memory.summarize_session", acks_late=True, ignore_result=True)
def summarize_session(session_id: str) -> str | None:
    """The whole session as one summary for the end user's later sessions."""
    session = _session(session_id)
    if session is None:
        return None
    with rls.tenant_scope(session.tenant_id):
        summary = session_summarize(session=session)
    return str(summary.pk) if summary else None


def _session(session_id: str) -> Session | None:
    """The session a task was given (looked up across tenants: the task runs in its
    tenant's scope once it knows it), or None when it is gone."""
    with rls.cross_tenant(rls.CrossTenantReason.TASK_DISPATCH, "session"):
        return Session.objects.select_related("agent").filter(pk=session_id).first()


@shared_task(name="memory.summarize_idle_sessions")
def summarize_idle_sessions() -> int:
    """Beat: sessions idle for IDLE_SUMMARY_SECONDS get their session summary."""
    cutoff = timezone.now() - timedelta(seconds=memory_settings().IDLE_SUMMARY_SECONDS)
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "idle sessions"):
        idle = Session.objects.filter(last_activity_at__lt=cutoff, status=Session.Status.ACTIVE)
        session_ids = list(idle.values_list("pk", flat=True)[:500])
    done = 0
    for session_id in session_ids:  # each summarized in its own tenant's scope
        if summarize_session(str(session_id)):
            done += 1
    return done


@shared_task(name="memory.enforce_retention")
def enforce_retention() -> dict[str, int]:
    """Beat (daily): every tenant's retention policies; each run is audited."""
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "retention"):
        return asdict(retention_run_all())


@shared_task(name="memory.sample_storage")
def sample_storage() -> int:
    """Beat (daily): rows and bytes per tenant per store, for the growth charts."""
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "storage accounting"):
        return storage_sample_all()
