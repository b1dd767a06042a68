"""The audit trail: append-only events, hash-chained per tenant.

Write services own their events: each takes an `actor`, records exactly one event for its
action inside its own transaction, and is registered with `@audited(action)` (or says why
not with `@unaudited(reason)`); transports (views, admin, commands, tasks) only call services.
tests/agentplatform/test_audit_services.py holds every service to that.

`audit_record` only inserts: no lock, nothing read, no chain field computed, so a tenant's
writes on every process never wait for each other. The chainer, `audit_chain` (beat's
`agentplatform.audit_chain`, every few seconds, and `verify_audit` before it verifies), then
links each tenant's pending events into the tenant's chain, in `id` order: `chain_seq`
1, 2, 3, ... and a hash over the event's fields and the previous event's hash. Only the
chainer takes a lock (one chainer per tenant at a time), and only for its own short
transaction. An event whose transaction commits late, after events with higher ids were
chained, simply joins the chain later: the order is the chain's, not the ids'.

Nothing else updates or deletes an event: a trigger refuses it (and lets the chainer link a
pending event once, changing nothing else). `audit_verify` recomputes every chain and reports
the first break, which any edit or deletion of a chained event made around the trigger
produces. An event is tamper-evident once chained (seconds after its write); before that, its
payload is covered by the digest written with it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import Model, Q
from django.utils import timezone
from rest_framework.request import Request

from agentplatform.models import AuditEvent, Tenant

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    kind: str  # "api_key" | "operator" | "system"
    id: str


SYSTEM = Actor("system", "platform")


def command_actor(module: str) -> Actor:
    """The actor of a management command: `command_actor(__name__)` in its module."""
    return Actor("system", f"manage.py {module.rsplit('.', 1)[-1]}")


F = TypeVar("F", bound=Callable[..., Any])
# action -> the service that records it, and service -> why it records nothing.
AUDITED: dict[str, Callable[..., Any]] = {}
UNAUDITED: dict[Callable[..., Any], str] = {}


def audited(*actions: str) -> Callable[[F], F]:
    """Register a write service as the one that records `actions` (usually one; a service
    whose action depends on what it found, like an upsert, names each)."""

    def register(service: F) -> F:
        if "actor" not in inspect.signature(service).parameters:
            raise TypeError(f"{service.__qualname__} records audit events: it takes an actor")
        for action in actions:
            if action in AUDITED:
                raise ValueError(f"{action!r} is recorded by {AUDITED[action].__qualname__}")
            AUDITED[action] = service
        return service

    return register


def unaudited(reason: str) -> Callable[[F], F]:
    """Register a write service that records no event, and why (data-plane writes whose
    rows are their own record, or writes audited by the service that calls them)."""

    def register(service: F) -> F:
        UNAUDITED[service] = reason
        return service

    return register


def actor_of(request: Request) -> Actor:
    key = getattr(request, "auth", None)
    if key is not None and hasattr(key, "prefix"):
        return Actor("api_key", key.prefix)
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return Actor("operator", str(user.pk))
    return SYSTEM


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _digest(payload: Any) -> str:
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def _event_hash(event: AuditEvent) -> str:
    """Covers the event's fields and the previous hash, not `chain_seq`: the links already fix
    the order (and events chained before `chain_seq` existed keep their hashes)."""
    body = _canonical(
        [
            str(event.tenant_id) if event.tenant_id else None,
            event.actor_kind,
            event.actor_id,
            event.action,
            event.target_type,
            event.target_id,
            event.payload_digest,
            event.created_at.isoformat(),
            event.prev_hash,
        ]
    )
    return hashlib.sha256(body.encode()).hexdigest()


def audit_record(
    *,
    tenant: Tenant | None,
    actor: Actor,
    action: str,
    target: Model | None = None,
    payload: Any = None,
) -> AuditEvent:
    """Append one event, pending, for the chainer to link (inside the caller's transaction if
    any). One INSERT: no lock, so a tenant's concurrent writes do not queue behind each other."""
    payload = json.loads(_canonical(payload or {}))
    return AuditEvent.objects.create(
        tenant_id=tenant.pk if tenant else None,
        actor_kind=actor.kind,
        actor_id=actor.id,
        action=action,
        target_type=target._meta.label if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        payload=payload,
        payload_digest=_digest(payload),
        created_at=timezone.now(),
    )


def audit_row(row: Model, *, actor: Actor, action: str, payload: Any = None) -> AuditEvent:
    """Record an action on a tenant's row, in that row's tenant's chain (no lookup)."""
    tenant_id = getattr(row, "tenant_id", None)
    tenant = Tenant(pk=tenant_id) if tenant_id else None
    return audit_record(tenant=tenant, actor=actor, action=action, target=row, payload=payload)


def audit_delete(row: Model, *, actor: Actor, action: str, payload: Any = None) -> None:
    """Delete a tenant's row and record it, in one transaction (the event is written first:
    it names the row)."""
    with transaction.atomic():
        audit_row(row, actor=actor, action=action, payload=payload)
        row.delete()


# --- the chainer ---------------------------------------------------------------------------

CHAIN_BATCH = 2000
_LINK = """
UPDATE agentplatform_auditevent AS e
SET chain_seq = v.seq, prev_hash = v.prev_hash, hash = v.hash
FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) AS v(id, seq, prev_hash, hash)
WHERE e.id = v.id AND e.chain_seq IS NULL
"""


def audit_chain() -> int:
    """Link every pending event into its tenant's chain; returns how many were linked.

    Runs across tenants (`rls.cross_tenant` with the reason AUDIT_CHAINING, entered by its
    callers: the beat task and `verify_audit`). Each tenant is chained in its own short
    transactions under the tenant's advisory lock, so two chainers never fork a chain (the
    second waits, then finds less or nothing to do) and writers never wait at all."""
    pending = (
        AuditEvent.objects.filter(chain_seq__isnull=True)
        .order_by()
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    return sum(audit_chain_tenant(tenant_id) for tenant_id in list(pending))


def audit_chain_tenant(tenant_id: object) -> int:
    """Link one tenant's pending events (None: the platform's own), in batches."""
    linked = 0
    while True:
        with transaction.atomic():
            _lock_chain(tenant_id)
            count = _link_batch(tenant_id)
        linked += count
        if count < CHAIN_BATCH:
            return linked


def _chain_of(tenant_id: object) -> Q:
    return Q(tenant_id=tenant_id) if tenant_id is not None else Q(tenant_id__isnull=True)


def _link_batch(tenant_id: object) -> int:
    """Under the tenant's chain lock: the next CHAIN_BATCH pending events, in id order,
    linked after the chain's head."""
    chain = AuditEvent.objects.filter(_chain_of(tenant_id))
    head = (
        chain.filter(chain_seq__isnull=False)
        .order_by("-chain_seq")
        .values_list("chain_seq", "hash")
        .first()
    )
    seq, previous = (head[0] or 0, head[1] or GENESIS) if head is not None else (0, GENESIS)
    batch = list(chain.filter(chain_seq__isnull=True).order_by("id")[:CHAIN_BATCH])
    ids, seqs, prevs, hashes = [], [], [], []
    for event in batch:
        seq += 1
        event.prev_hash = previous
        previous = event.hash = _event_hash(event)
        ids.append(event.pk)
        seqs.append(seq)
        prevs.append(event.prev_hash)
        hashes.append(event.hash)
    if batch:
        with connection.cursor() as cursor:
            cursor.execute(_LINK, [ids, seqs, prevs, hashes])
    return len(batch)


def _lock_chain(tenant_id: object) -> None:
    # Namespace 7002, as when writers took this lock: an old process still appending under it
    # during a deploy waits for the chainer rather than interleaving with it.
    key = zlib.crc32(str(tenant_id if tenant_id else "platform").encode()) - 2**31
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [7002, key])


@dataclass(frozen=True)
class Break:
    tenant_id: str | None
    event_id: int
    reason: str


def audit_verify() -> Iterator[tuple[int, Break | None]]:
    """Walk every chain in `chain_seq` order; yields (events checked so far, the first break of
    a chain or None). Pending events are not a break: the caller chains first
    (`audit_chain`), so only events written meanwhile are pending, and their payload digests
    are checked."""
    tenants = AuditEvent.objects.order_by().values_list("tenant_id", flat=True).distinct()
    checked = 0
    for tenant_id in list(tenants):
        chain = AuditEvent.objects.filter(_chain_of(tenant_id))
        found: Break | None = None
        previous, expected_seq = GENESIS, 1
        for event in chain.filter(chain_seq__isnull=False).order_by("chain_seq").iterator():
            checked += 1
            if event.prev_hash != previous or event.chain_seq != expected_seq:
                found = Break(_id(tenant_id), event.pk, "an event before it is missing")
                break
            if _digest(event.payload) != event.payload_digest or _event_hash(event) != event.hash:
                found = Break(_id(tenant_id), event.pk, "the event was altered")
                break
            previous, expected_seq = event.hash or "", expected_seq + 1
        if found is None:
            for event in chain.filter(chain_seq__isnull=True).order_by("id").iterator():
                checked += 1
                if _digest(event.payload) != event.payload_digest:
                    found = Break(_id(tenant_id), event.pk, "the event was altered")
                    break
        yield checked, found


def _id(tenant_id: object) -> str | None:
    return str(tenant_id) if tenant_id else None
