"""Rollback and fork: the operator's undo, and a branch to try something else.

Rollback makes a checkpoint the session's head: later messages are kept but marked
rolled back (out of every later context), memories learned only from them are retracted,
summaries that covered them are removed, working memory is rebuilt, and open sockets get a
`rollback` frame. It takes the session's lease, so it never races a running turn. Fork
starts a new session whose history is the checkpoint's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from agentplatform.core.audit import Actor, audit_record, audited
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents.engine.concurrency import SessionBusy, lease_try_acquire
from agents.engine.runs import run_find
from agents.engine.turn import Outcome, Settle, turn_settle
from agents.live import publish
from agents.models import Message, Session
from agents.services import NewMessage, messages_append, session_new
from memory.models import Checkpoint, Memory, Summary
from memory.state import rebuild_working_memory
from memory.working import wm_write

REVERSIBLE = (Message.Status.ACTIVE, Message.Status.INTERRUPTED)


@dataclass
class RollbackReceipt:
    checkpoint: Checkpoint
    head: Checkpoint
    rolled_back_seqs: list[int] = field(default_factory=list)
    retracted_memories: list[str] = field(default_factory=list)
    removed_summaries: list[str] = field(default_factory=list)
    # Side effects run after the checkpoint: the platform cannot undo these.
    side_effects: list[dict[str, Any]] = field(default_factory=list)


@audited("session.rollback")
def checkpoint_rollback(
    *, session: Session, checkpoint: Checkpoint, actor: Actor
) -> RollbackReceipt:
    """Make `checkpoint` the head of `session` (see the module docstring); the event records
    which messages were undone, with the rollback's own transaction.

    Raises SessionBusy while a turn runs on the session. A run waiting for an action is
    cancelled first: its pending calls get error results, so none is left without one.
    """
    _cancel_waiting_run(session, "The session was rolled back.")
    lease = lease_try_acquire(session)
    if lease is None:
        raise SessionBusy("A turn is running on this session; roll back when it ends.")
    try:
        with transaction.atomic():
            receipt = _rollback(session, checkpoint)
            audit_record(
                tenant=session.tenant,
                actor=actor,
                action="session.rollback",
                target=session,
                payload=_receipt_payload(receipt),
            )
        memory = rebuild_working_memory(session, session.agent)
        wm_write(session, memory, session.agent.working_memory_ttl_seconds)
    finally:
        lease.release()
    publish(
        session.pk,
        "rollback",
        {"checkpoint": str(checkpoint.pk), "high_water_seq": checkpoint.high_water_seq},
    )
    return receipt


def _cancel_waiting_run(session: Session, detail: str) -> None:
    waiting = Session.objects.filter(pk=session.pk).values_list("awaiting_turn", flat=True).first()
    run = run_find(session, waiting) if waiting else None
    if run is not None and not run.final:
        turn_settle(session=session, run=run, settle=Settle(Outcome.CANCELLED, "cancelled", detail))


def _receipt_payload(receipt: RollbackReceipt) -> dict[str, Any]:
    return {
        "checkpoint": str(receipt.checkpoint.pk),
        "head": str(receipt.head.pk),
        "rolled_back_seqs": receipt.rolled_back_seqs,
        "retracted_memories": receipt.retracted_memories,
        "removed_summaries": receipt.removed_summaries,
    }


def _rollback(session: Session, checkpoint: Checkpoint) -> RollbackReceipt:
    high_water = checkpoint.high_water_seq
    later = Message.objects.filter(session=session, seq__gt=high_water, status__in=REVERSIBLE)
    rolled_back = list(later.values_list("pk", "seq"))
    later.update(status=Message.Status.ROLLED_BACK)
    undone_ids = {pk for pk, _ in rolled_back}
    receipt = RollbackReceipt(checkpoint=checkpoint, head=checkpoint)
    receipt.rolled_back_seqs = [seq for _, seq in rolled_back]
    receipt.retracted_memories = _retract_memories(session, undone_ids)
    summaries = Summary.objects.filter(session=session, last_seq__gt=high_water)
    receipt.removed_summaries = [str(pk) for pk in summaries.values_list("pk", flat=True)]
    summaries.delete()
    receipt.side_effects = side_effects_after(session, checkpoint)
    last_seq = session.messages.order_by("-seq").values_list("seq", flat=True).first() or 0
    receipt.head = Checkpoint.objects.create(
        tenant_id=session.tenant_id,
        session=session,
        parent=checkpoint,
        kind=Checkpoint.Kind.MANUAL,
        high_water_seq=last_seq,
        memory_first_seq=checkpoint.memory_first_seq,
        memory_tokens=checkpoint.memory_tokens,
        task_state=checkpoint.task_state,
        metadata={"rollback_to": str(checkpoint.pk), "restored_seq": high_water},
    )
    return receipt


def _retract_memories(session: Session, undone: set[int]) -> list[str]:
    """Memories every source of which is an undone message of this session."""
    retracted = []
    candidates = Memory.objects.filter(
        tenant_id=session.tenant_id, user_id=session.user_id, status=Memory.Status.ACTIVE
    )
    for memory in candidates:
        ids = {s.get("message_id") for s in memory.sources if s.get("kind") == "message"}
        if ids and ids <= undone and len(ids) == len(memory.sources):
            memory.status = Memory.Status.RETRACTED
            memory.save(update_fields=["status", "updated_at"])
            retracted.append(str(memory.pk))
    return retracted


def side_effects_after(session: Session, checkpoint: Checkpoint) -> list[dict[str, Any]]:
    """Tool calls recorded after the checkpoint: the platform cannot undo them."""
    effects: list[dict[str, Any]] = []
    later = Checkpoint.objects.filter(
        session=session, created_at__gt=checkpoint.created_at
    ).order_by("created_at")
    for recorded in later.values_list("side_effects", flat=True):
        effects.extend(recorded)
    return effects


@audited("session.fork")
def checkpoint_fork(*, session: Session, checkpoint: Checkpoint, actor: Actor) -> Session:
    """A new session of the same agent and end user whose history is the checkpoint's
    (one event: the fork, not a separate session opening)."""
    with transaction.atomic():
        fork = session_new(
            tenant=session.tenant,
            agent=session.agent,
            user_id=session.user_id,
            metadata={
                **session.metadata,
                "forked_from": {"session": str(session.pk), "checkpoint": str(checkpoint.pk)},
            },
        )
        history = Message.objects.filter(
            session=session, seq__lte=checkpoint.high_water_seq, status__in=REVERSIBLE
        ).order_by("seq")
        copies = messages_append(
            session=fork,
            messages=[
                NewMessage(
                    m.role,
                    m.content,
                    m.token_count,
                    m.status,
                    {**m.metadata, "forked_from_seq": m.seq},
                )
                for m in history
            ],
        )
        Checkpoint.objects.create(
            tenant_id=session.tenant_id,
            session=fork,
            kind=Checkpoint.Kind.MANUAL,
            high_water_seq=len(copies),
            task_state=checkpoint.task_state,
            metadata={"forked_from": str(checkpoint.pk)},
        )
        audit_record(
            tenant=session.tenant,
            actor=actor,
            action="session.fork",
            target=session,
            payload={"checkpoint": str(checkpoint.pk), "fork": str(fork.pk)},
        )
    fork.refresh_from_db()
    get_redis().delete(redis_keys.working_memory(fork.pk))
    return fork
