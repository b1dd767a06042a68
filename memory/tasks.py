"""Celery tasks of the memory tiers. Thin: ids in, the row loaded (its tenant with it), a
service called; each is safe to run twice."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.db.models import Max
from django.utils import timezone

from agentplatform.audit import SYSTEM, audit_record
from agents.models import Message, Session
from memory.conf import memory_settings
from memory.extraction import extract_facts
from memory.models import Summary
from memory.semantic import Source, memory_upsert
from memory.summaries import summary_create


@shared_task(name="memory.extract_memories", acks_late=True)
def extract_memories(message_ids: list[int]) -> int:
    """Facts the end user stated in these messages become memories (deduplicated)."""
    stored = 0
    messages = Message.objects.filter(pk__in=message_ids, role=Message.Role.USER).select_related(
        "session__tenant", "session__agent"
    )
    for message in messages:
        session = message.session
        for fact in extract_facts(message.content):
            memory, created = memory_upsert(
                tenant=session.tenant,
                user_id=session.user_id,
                text=fact,
                source=Source("message", message_id=message.pk, session_id=str(session.pk)),
            )
            audit_record(
                tenant=session.tenant,
                actor=SYSTEM,
                action="memory.learned" if created else "memory.source_added",
                target=memory,
                payload={"message_id": message.pk, "text": memory.text},
            )
            stored += 1
    return stored


@shared_task(name="memory.compact_session", acks_late=True)
def compact_session(session_id: str, first_seq: int, last_seq: int) -> str | None:
    session = Session.objects.select_related("agent").filter(pk=session_id).first()
    if session is None:
        return None
    summary = summary_create(
        session=session, kind=Summary.Kind.COMPACTION, first_seq=first_seq, last_seq=last_seq
    )
    return str(summary.pk) if summary else None


@shared_task(name="memory.summarize_session", acks_late=True)
def summarize_session(session_id: str) -> str | None:
    """The whole session as one summary for the end user's later sessions (replaced when
    the session grew since)."""
    session = Session.objects.select_related("agent").filter(pk=session_id).first()
    if session is None:
        return None
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
    idle = Session.objects.filter(last_activity_at__lt=cutoff, status=Session.Status.ACTIVE)
    done = 0
    for session_id in idle.values_list("pk", flat=True)[:500]:
        if summarize_session(str(session_id)):
            done += 1
    return done
