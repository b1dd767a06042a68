"""Celery tasks of the memory tiers. Thin: ids in, the row loaded (its tenant with it), a
service called; each is safe to run twice. The per-end-user tasks keep no result in the
result backend (`ignore_result`), so erasing an end user leaves nothing of theirs there."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import cast

from celery import shared_task
from django.db.models import Max
from django.utils import timezone

from agentplatform import keys, rls
from agentplatform.audit import SYSTEM
from agentplatform.redis import get_redis
from agents.llm import backend_for, options_for
from agents.llm.base import ChatMessage, Done, LLMError
from agents.llm.openai_compat import OpenAICompatibleBackend
from agents.models import Message, Session
from memory.conf import memory_settings
from memory.extraction import EXTRACTION_PROMPT, extract_facts, parse_llm_facts
from memory.models import Summary
from memory.semantic import Source, memory_upsert
from memory.summaries import summary_create


@shared_task(name="memory.extract_memories", acks_late=True, ignore_result=True)
def extract_memories(message_ids: list[int]) -> int:
    """Facts the end user stated in these messages become memories (deduplicated); each
    tenant's messages in that tenant's scope."""
    with rls.cross_tenant(rls.CrossTenantReason.TASK_DISPATCH, "messages"):
        tenant_ids = set(
            Message.objects.filter(pk__in=message_ids).values_list("tenant_id", flat=True)
        )
    stored = 0
    for tenant_id in tenant_ids:
        with rls.tenant_scope(tenant_id):
            stored += _extract_in_scope(message_ids)
    return stored


def _extract_in_scope(message_ids: list[int]) -> int:
    """`extract_memories` for the messages the current tenant scope can see."""
    stored = 0
    messages = Message.objects.filter(pk__in=message_ids, role=Message.Role.USER).select_related(
        "session__tenant", "session__agent"
    )
    for message in messages:
        session = message.session
        for fact in facts_of(message):
            memory_upsert(
                tenant=session.tenant,
                user_id=session.user_id,
                text=fact,
                source=Source("message", message_id=message.pk, session_id=str(session.pk)),
                actor=SYSTEM,
            )
            stored += 1
    return stored


def facts_of(message: Message) -> list[str]:
    """The LLM's extraction when the agent's LLM can do it and its answer holds up;
    otherwise the rules'."""
    agent = message.session.agent
    mode = memory_settings().LLM_EXTRACTION
    uses_llm = mode == "always" or (
        mode == "auto" and isinstance(backend_for(agent), OpenAICompatibleBackend)
    )
    if uses_llm:
        prompt = [ChatMessage("user", EXTRACTION_PROMPT.format(message=message.content))]
        try:
            done = next(
                e
                for e in backend_for(agent).stream(prompt, options_for(agent))
                if isinstance(e, Done)
            )
        except (LLMError, StopIteration):
            done = None
        facts = parse_llm_facts(done.text, message.content) if done else None
        if facts is not None:
            return facts
    return extract_facts(message.content)


SCHEDULED_TTL_SECONDS = 60
RUNNING_TTL_SECONDS = 600
DRAIN_BATCH = 200


@shared_task(name="memory.extract_pending", acks_late=True, ignore_result=True)
def extract_pending(tenant_id: str) -> int:
    """Extract memories from the tenant's pending messages, oldest first (the list and its
    flags: memory/followups.py). Ids leave the list only once processed."""
    client = get_redis()
    pending = keys.pending_extraction(tenant_id)
    running = keys.extraction_running(tenant_id)
    client.delete(keys.extraction_scheduled(tenant_id))
    if not client.set(running, "1", nx=True, ex=RUNNING_TTL_SECONDS):
        # Another run drains the list now; look again once it is likely done.
        extract_pending.apply_async((tenant_id,), countdown=SCHEDULED_TTL_SECONDS)
        return 0
    stored = 0
    try:
        with rls.tenant_scope(tenant_id):
            while True:
                raw = cast(list[bytes], client.lrange(pending, 0, DRAIN_BATCH - 1))
                if not raw:
                    return stored
                stored += _extract_in_scope([int(item) for item in raw])
                client.ltrim(pending, len(raw), -1)
    finally:
        client.delete(running)


@shared_task(name="memory.extract_pending_sweep")
def extract_pending_sweep() -> int:
    """Beat: schedule extraction for tenants whose ids wait with no task queued (a task
    was lost, or the tenant went quiet right after its flag expired)."""
    client = get_redis()
    scheduled = 0
    prefix = keys.pending_extraction("")
    for name in client.scan_iter(match=keys.pending_extraction("*"), count=500):
        tenant_id = name.decode()[len(prefix) :]
        if ":" in tenant_id or not client.llen(name):
            continue
        flag = keys.extraction_scheduled(tenant_id)
        if client.set(flag, "1", nx=True, ex=SCHEDULED_TTL_SECONDS):
            extract_pending.delay(tenant_id)
            scheduled += 1
    return scheduled


@shared_task(name="memory.compact_session", acks_late=True, ignore_result=True)
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
        get_redis().delete(keys.compaction_scheduled(session_id))


@shared_task(name="memory.summarize_session", acks_late=True, ignore_result=True)
def summarize_session(session_id: str) -> str | None:
    """The whole session as one summary for the end user's later sessions (replaced when
    the session grew since)."""
    session = _session(session_id)
    if session is None:
        return None
    with rls.tenant_scope(session.tenant_id):
        return _summarize(session)


def _session(session_id: str) -> Session | None:
    """The session a task was given (looked up across tenants: the task runs in its
    tenant's scope once it knows it), or None when it is gone."""
    with rls.cross_tenant(rls.CrossTenantReason.TASK_DISPATCH, "session"):
        return Session.objects.select_related("agent").filter(pk=session_id).first()


def _summarize(session: Session) -> str | None:
    last = session.messages.aggregate(last=Max("seq"))["last"]
    if not last:
        return None
    current = Summary.objects.filter(session=session, kind=Summary.Kind.SESSION).first()
    if current is not None and current.last_seq >= last:
        return str(current.pk)
    if current is not None:
        current.delete()
    summary = summary_create(session=session, kind=Summary.Kind.SESSION, first_seq=1, last_seq=last)
    return str(summary.pk) if summary else None


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
    from memory.retention import retention_run_all

    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "retention"):
        return asdict(retention_run_all())


@shared_task(name="memory.sample_storage")
def sample_storage() -> int:
    """Beat (daily): rows and bytes per tenant per store, for the growth charts."""
    from memory.accounting import storage_sample_all

    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "storage accounting"):
        return storage_sample_all()
