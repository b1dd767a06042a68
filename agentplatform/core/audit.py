"""The audit trail: append-only events, hash-chained per tenant.

Write services own their events: each takes an `actor`, records exactly one event for its
action inside its own transaction, and is registered with `@audited(action)` (or says why
not with `@unaudited(reason)`); transports (views, admin, commands, tasks) only call services.
tests/agentplatform/test_audit_services.py holds every service to that.

`audit_record` appends an event under a per-tenant advisory lock (so a chain never forks),
hashing the event's fields with the previous event's hash. Nothing updates or deletes an
event: a trigger refuses it. `audit_verify` recomputes every chain and reports the first
break, which any edit or deletion made around the trigger produces.
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
from django.db.models import Model
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


def _event_hash(event: AuditEvent) -> str:
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
    """Append one event to the tenant's chain (inside the caller's transaction if any)."""
    payload = json.loads(_canonical(payload or {}))
    with transaction.atomic():
        _lock_chain(tenant)
        chain = (
            AuditEvent.objects.filter(tenant_id=tenant.pk)
            if tenant is not None
            else AuditEvent.objects.filter(tenant_id__isnull=True)
        )
        previous = chain.order_by("-id").values_list("hash", flat=True).first()
        event = AuditEvent(
            tenant_id=tenant.pk if tenant else None,
            actor_kind=actor.kind,
            actor_id=actor.id,
            action=action,
            target_type=target._meta.label if target is not None else "",
            target_id=str(target.pk) if target is not None else "",
            payload=payload,
            payload_digest=hashlib.sha256(_canonical(payload).encode()).hexdigest(),
            created_at=timezone.now(),
            prev_hash=previous or GENESIS,
        )
        event.hash = _event_hash(event)
        event.save()
    return event


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


def _lock_chain(tenant: Tenant | None) -> None:
    key = zlib.crc32(str(tenant.pk if tenant else "platform").encode()) - 2**31
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [7002, key])


@dataclass(frozen=True)
class Break:
    tenant_id: str | None
    event_id: int
    reason: str


def audit_verify() -> Iterator[tuple[int, Break | None]]:
    """Walk every chain; yields (events checked so far, the first break of a chain or None)."""
    tenants = AuditEvent.objects.values_list("tenant_id", flat=True).distinct()
    checked = 0
    for tenant_id in tenants:
        previous = GENESIS
        for event in AuditEvent.objects.filter(tenant_id=tenant_id).order_by("id").iterator():
            checked += 1
            digest = hashlib.sha256(_canonical(event.payload).encode()).hexdigest()
            if event.prev_hash != previous:
                yield checked, Break(_id(tenant_id), event.pk, "an event before it is missing")
                break
            if digest != event.payload_digest or _event_hash(event) != event.hash:
                yield checked, Break(_id(tenant_id), event.pk, "the event was altered")
                break
            previous = event.hash
        else:
            yield checked, None


def _id(tenant_id: object) -> str | None:
    return str(tenant_id) if tenant_id else None
