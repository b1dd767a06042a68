"""Erase everything kept about one end user of one tenant, in every store.

PostgreSQL: the user's sessions with their messages, checkpoints and summaries, the user's
memories, and the idempotency records whose stored responses belong to those sessions.
Redis: every key of those sessions (working memory, frame streams and counters, leases,
queues, listeners). The receipt counts what went from each store and is audited; the audit
event names the user only by a hash, so the trail itself keeps no personal data.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass

from django.db import transaction
from django.db.models import Q

from agentplatform.core.audit import Actor, audit_record, audited
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agentplatform.models import IdempotencyRecord, Tenant
from agents.models import Message, Session
from memory.models import Checkpoint, Memory, Summary


@dataclass
class ErasureReceipt:
    user_id: str
    sessions: int = 0
    messages: int = 0
    checkpoints: int = 0
    summaries: int = 0
    memories: int = 0
    idempotency_records: int = 0
    redis_keys: int = 0


@audited("user.erase")
def user_erase(*, tenant: Tenant, user_id: str, actor: Actor) -> ErasureReceipt:
    receipt = ErasureReceipt(user_id=user_id)
    session_ids = list(
        Session.objects.filter(tenant=tenant, user_id=user_id).values_list("pk", flat=True)
    )
    with transaction.atomic():
        receipt.messages = Message.objects.filter(session_id__in=session_ids).count()
        receipt.checkpoints = Checkpoint.objects.filter(session_id__in=session_ids).count()
        receipt.summaries, _ = Summary.objects.filter(
            Q(session_id__in=session_ids) | Q(tenant=tenant, user_id=user_id)
        ).delete()
        receipt.memories, _ = Memory.objects.filter(tenant=tenant, user_id=user_id).delete()
        receipt.idempotency_records = _erase_idempotency(tenant, session_ids)
        receipt.sessions = len(session_ids)
        Session.objects.filter(pk__in=session_ids).delete()  # cascades messages, checkpoints
        audit_record(
            tenant=tenant,
            actor=actor,
            action="user.erase",
            payload={
                **asdict(receipt),
                "user_id": hashlib.sha256(user_id.encode()).hexdigest(),
            },
        )
    receipt.redis_keys = _erase_redis(session_ids)
    return receipt


def _erase_idempotency(tenant: Tenant, session_ids: list[uuid.UUID]) -> int:
    matches = Q()
    for session_id in session_ids:
        matches |= Q(path__contains=str(session_id)) | Q(key__startswith=f"ws:{session_id}:")
    if not session_ids:
        return 0
    deleted, _ = IdempotencyRecord.objects.filter(matches, tenant=tenant).delete()
    return deleted


def _erase_redis(session_ids: list[uuid.UUID]) -> int:
    client = get_redis()
    erased = 0
    for session_id in session_ids:
        names = redis_keys.session_keys(session_id)
        names += [k.decode() for k in client.scan_iter(match=redis_keys.ticket_pattern(session_id))]
        erased += int(client.delete(*names))  # type: ignore[arg-type]
    return erased
