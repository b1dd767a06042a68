"""Episodic summaries: compaction of messages that fell out of working memory, and a
summary of a whole session for the end user's later sessions.

A summary is accepted only if it is non-empty and keeps the source's key facts (every
number, name and date found in the source must appear in it). The LLM gets two tries; then
an extractive summary is built from the source's own sentences, chosen to cover every key
fact, so no fact is ever silently dropped. Source messages are never deleted here.
"""

from __future__ import annotations

import logging
import re

from django.db import IntegrityError, transaction
from django.db.models import Max

from agentplatform.core.audit import unaudited
from agentplatform.core.webhooks import EventType, event_publish
from agents.llm import backend_for, options_for
from agents.llm.base import ChatMessage, Done, LLMError, estimate_tokens
from agents.models import Message, Session
from memory.conf import memory_settings
from memory.facts import key_facts, missing_facts
from memory.models import Summary

logger = logging.getLogger(__name__)
LLM_TRIES = 2
PROMPT = (
    "Summarise this conversation between a user and an assistant in a few sentences, for the "
    "assistant to remember later. Keep every name, number, date and stated preference "
    "exactly as written. Reply with the summary only.\n\n{transcript}"
)


@unaudited("derived from the messages it covers, which its row names")
def summary_create(*, session: Session, kind: str, first_seq: int, last_seq: int) -> Summary | None:
    """Summarise messages first_seq..last_seq of `session`; None if there is nothing to
    summarise or the range is already covered (safe to run twice)."""
    messages = list(
        Message.objects.filter(
            session=session,
            seq__gte=first_seq,
            seq__lte=last_seq,
            status__in=[Message.Status.ACTIVE, Message.Status.INTERRUPTED],
            role__in=[Message.Role.USER, Message.Role.ASSISTANT],
        ).order_by("seq")
    )
    if not messages:
        return None
    transcript = "\n".join(f"{m.role}: {m.content}" for m in messages)
    text, method, model = _summarise(session, transcript)
    try:
        with transaction.atomic():
            summary = Summary.objects.create(
                tenant_id=session.tenant_id,
                session=session,
                user_id=session.user_id,
                kind=kind,
                first_seq=first_seq,
                last_seq=last_seq,
                text=text,
                method=method,
                model=model,
                prompt_version=memory_settings().SUMMARY_PROMPT_VERSION,
                source_tokens=sum(m.token_count for m in messages),
                summary_tokens=estimate_tokens(text),
            )
            _announce(summary)
            return summary
    except IntegrityError:  # an overlapping summary exists: another run got there first
        return None


def _announce(summary: Summary) -> None:
    """`session.summarized` to the tenant's webhooks, in the summary's transaction: ids and
    the range covered, not the text (receivers fetch it with the tenant's key)."""
    event_publish(
        tenant_id=summary.tenant_id,
        type=EventType.SESSION_SUMMARIZED,
        data={
            "session": str(summary.session_id),
            "summary": str(summary.pk),
            "kind": summary.kind,
            "first_seq": summary.first_seq,
            "last_seq": summary.last_seq,
        },
    )


def _summarise(session: Session, transcript: str) -> tuple[str, str, str]:
    facts = key_facts(transcript)
    agent = session.agent
    for attempt in range(LLM_TRIES):
        try:
            text, model = _llm_summary(agent, transcript)
        except LLMError as error:
            logger.warning("summary attempt %s failed: %s", attempt + 1, error)
            continue
        if text.strip() and not missing_facts(facts, text):
            return text.strip(), Summary.Method.LLM, model
        logger.info("summary attempt %s rejected (empty or dropped facts)", attempt + 1)
    return extractive_summary(transcript, facts), Summary.Method.EXTRACTIVE, "extractive"


def _llm_summary(agent: object, transcript: str) -> tuple[str, str]:
    backend = backend_for(agent)  # type: ignore[arg-type]
    prompt = [ChatMessage("user", PROMPT.format(transcript=transcript))]
    done = None
    for event in backend.stream(prompt, options_for(agent)):  # type: ignore[arg-type]
        if isinstance(event, Done):
            done = event
    if done is None:
        raise LLMError("the backend ended without a result")
    return done.text, done.model


def extractive_summary(transcript: str, facts: set[str]) -> str:
    """The source's own sentences that cover every key fact, then the opening ones, within
    the summary budget (sentences with facts always stay, whatever the budget)."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", transcript) if s.strip()]
    chosen: list[int] = []
    uncovered = set(facts)
    for index, sentence in enumerate(sentences):
        found = {fact for fact in uncovered if fact in sentence.lower()}
        if found:
            chosen.append(index)
            uncovered -= found
    budget = memory_settings().SUMMARY_MAX_TOKENS
    for index in range(len(sentences)):
        used = sum(estimate_tokens(sentences[i]) for i in chosen)
        if index not in chosen and used + estimate_tokens(sentences[index]) <= budget:
            chosen.append(index)
    text = " ".join(sentences[i] for i in sorted(chosen))
    return text or transcript[:2000]


def compaction_range(compacted_through: int, first_in_memory: int) -> tuple[int, int] | None:
    """The range to compact when enough messages fell out of working memory unsummarised."""
    first, last = compacted_through + 1, first_in_memory - 1
    if last - first + 1 >= memory_settings().COMPACTION_MIN_MESSAGES:
        return first, last
    return None


@unaudited("derived from the messages it covers, which its row names")
def session_summarize(*, session: Session) -> Summary | None:
    """The whole session as one summary for the end user's later sessions, replaced when
    the session grew since; the current one when it already covers every message."""
    last = session.messages.aggregate(last=Max("seq"))["last"]
    if not last:
        return None
    current = Summary.objects.filter(session=session, kind=Summary.Kind.SESSION).first()
    if current is not None and current.last_seq >= last:
        return current
    if current is not None:
        current.delete()
    return summary_create(session=session, kind=Summary.Kind.SESSION, first_seq=1, last_seq=last)
