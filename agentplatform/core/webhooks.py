"""Webhooks: tenants' endpoints, the events the platform tells them about, and publishing.

`event_publish` is the one way in: it stores the event and one delivery per enabled endpoint
subscribed to its type, in the caller's transaction, and wakes the delivery task (by name)
after the commit, so no receiver ever hears of rolled-back work. Delivering, signing and
retrying are in `agentplatform.core.webhook_delivery`.

Each endpoint has a Standard Webhooks secret (`whsec_` + base64 of 32 random bytes), shown
once when it is made and at each rotation, and stored encrypted with the vault's cipher.
A rotated-out secret keeps signing for a grace period, so receivers can switch over without
dropping a message: meanwhile `webhook-signature` carries one signature per secret.
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.exceptions import NotFound

from agentplatform.core.audit import (
    Actor,
    audit_delete,
    audit_row,
    audited,
    unaudited,
)
from agentplatform.core.tenancy import access_object
from agentplatform.core.vault import cipher
from agentplatform.infra import outbound
from agentplatform.infra.tasks import enqueue
from agentplatform.models import (
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

# The task of agentplatform.tasks, named rather than imported: a service never imports a
# transport.
DELIVER_TASK = "agentplatform.webhook_deliver"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_PREVIOUS_SECRETS = 4  # rotations within one grace period beyond this drop the oldest
ENDPOINT_EDITABLE = ("url", "description", "events", "enabled")


class EventType(enum.StrEnum):
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_EXPIRED = "run.expired"
    RUN_REQUIRES_ACTION = "run.requires_action"
    SESSION_SUMMARIZED = "session.summarized"
    WEBHOOK_TEST = "webhook.test"  # sent by POST /webhooks/{id}/test/, to that endpoint only


# What an endpoint may subscribe to (a test ping goes wherever it is asked for).
SUBSCRIBABLE = tuple(sorted(t.value for t in EventType if t is not EventType.WEBHOOK_TEST))


@dataclass(frozen=True)
class WebhookSettings:
    """`WEBHOOKS = {...}` in settings overrides these (the environment feeds them)."""

    # Seconds to wait after the 1st, 2nd, ... failed attempt; then the delivery fails.
    RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18_000, 36_000, 36_000)
    # Each wait is moved by up to this share either way, so retries after an outage spread.
    JITTER: float = 0.2
    # A receiver's Retry-After is honoured (as the least wait) up to this.
    RETRY_AFTER_MAX_SECONDS: float = 21_600
    TIMEOUT_SECONDS: float = 10.0
    # Read at most this much of a receiver's answer (its status is what counts).
    MAX_RESPONSE_BYTES: int = 65_536
    # How long a rotated-out secret keeps signing.
    SECRET_GRACE_SECONDS: int = 86_400
    # Waits up to this long ride on a Celery countdown; longer ones are left to the sweep
    # (a Redis broker redelivers messages held longer than its visibility timeout).
    COUNTDOWN_MAX_SECONDS: float = 300
    # The sweep takes deliveries due this long ago (the countdown message had its chance).
    SWEEP_GRACE_SECONDS: float = 10
    SWEEP_BATCH: int = 1000
    RETENTION_DAYS: int = 30


def webhook_settings() -> WebhookSettings:
    return WebhookSettings(**getattr(settings, "WEBHOOKS", {}))


# --- secrets ------------------------------------------------------------------------------


def signing_secret_new() -> tuple[str, str]:
    """A new secret and its ciphertext."""
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()
    return secret, cipher().encrypt(secret.encode()).decode()


def signing_secrets(endpoint: WebhookEndpoint, *, now: datetime | None = None) -> list[str]:
    """The secrets that sign a message now: the current one, then the rotated-out ones
    still in their grace period. One that cannot be decrypted (SECRETS_KEY changed without
    keeping the old key) is skipped: the receiver will see a signature it cannot verify."""
    now = now or timezone.now()
    ciphertexts = [endpoint.secret_ciphertext] + [
        entry["ciphertext"]
        for entry in endpoint.previous_secrets
        if datetime.fromisoformat(entry["expires_at"]) > now
    ]
    found = []
    for ciphertext in ciphertexts:
        try:
            found.append(cipher().decrypt(ciphertext.encode()).decode())
        except InvalidToken:
            continue
    return found


# --- endpoints ----------------------------------------------------------------------------


def _clean_url(url: str) -> str:
    try:
        return outbound.url_check(url)
    except outbound.OutboundRefused as error:
        raise ValidationError({"url": [str(error)]}) from None


def _clean_events(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(SUBSCRIBABLE))
    if unknown or not events:
        known = ", ".join(SUBSCRIBABLE)
        raise ValidationError({"events": [f"Give one or more of: {known}."]})
    return sorted(set(events))


def _audit_payload(endpoint: WebhookEndpoint, **extra: Any) -> dict[str, Any]:
    # The host only: a URL's path or query may carry a receiver's token.
    host = outbound.url_host(endpoint.url)
    return {"host": host, "events": list(endpoint.events), **extra}


def _audit(endpoint: WebhookEndpoint, action: str, actor: Actor, **extra: Any) -> None:
    audit_row(endpoint, actor=actor, action=action, payload=_audit_payload(endpoint, **extra))


@audited("webhook.created")
@transaction.atomic
def webhook_endpoint_create(
    *,
    tenant: Tenant,
    url: str,
    events: list[str],
    description: str = "",
    enabled: bool = True,
    actor: Actor,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint; its secret is returned this once and kept only encrypted."""
    secret, ciphertext = signing_secret_new()
    endpoint = WebhookEndpoint(
        tenant=tenant,
        url=_clean_url(url),
        events=_clean_events(events),
        description=description,
        enabled=enabled,
        secret_ciphertext=ciphertext,
    )
    endpoint.full_clean()
    endpoint.save()
    _audit(endpoint, "webhook.created", actor)
    return endpoint, secret


@audited("webhook.updated")
@transaction.atomic
def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, actor: Actor, **fields: Any
) -> WebhookEndpoint:
    for name, value in fields.items():
        if name not in ENDPOINT_EDITABLE:
            raise ValueError(f"{name} is not editable")
        setattr(endpoint, name, value)
    if "url" in fields:
        endpoint.url = _clean_url(endpoint.url)
    if "events" in fields:
        endpoint.events = _clean_events(endpoint.events)
    if fields.get("enabled") is True:
        endpoint.disabled_reason = ""
    elif fields.get("enabled") is False and not endpoint.disabled_reason:
        endpoint.disabled_reason = "Disabled by the tenant."
    endpoint.full_clean()
    endpoint.save()
    _audit(endpoint, "webhook.updated", actor, fields=sorted(fields))
    return endpoint


@audited("webhook.disabled")
@transaction.atomic
def webhook_endpoint_disable(*, endpoint: WebhookEndpoint, reason: str, actor: Actor) -> None:
    """Stop sending to the endpoint (a receiver answered 410 Gone); its pending deliveries
    are cancelled when their turn comes. Records nothing when it was already disabled."""
    if not endpoint.enabled:
        return
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:500]
    endpoint.save(update_fields=["enabled", "disabled_reason", "updated_at"])
    _audit(endpoint, "webhook.disabled", actor, reason=reason[:500])


@audited("webhook.deleted")
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor) -> None:
    """Delete the endpoint with its delivery log (the events stay for other endpoints)."""
    audit_delete(endpoint, actor=actor, action="webhook.deleted", payload=_audit_payload(endpoint))


@audited("webhook.secret_rotated")
@transaction.atomic
def webhook_secret_rotate(
    *, endpoint: WebhookEndpoint, actor: Actor, grace_seconds: int | None = None
) -> tuple[WebhookEndpoint, str]:
    """A new current secret, returned this once; the old one keeps signing for
    `grace_seconds` (default: WEBHOOKS SECRET_GRACE_SECONDS; 0 retires it at once)."""
    now = timezone.now()
    grace = webhook_settings().SECRET_GRACE_SECONDS if grace_seconds is None else grace_seconds
    kept = [e for e in endpoint.previous_secrets if datetime.fromisoformat(e["expires_at"]) > now]
    if grace > 0:
        expires = (now + timedelta(seconds=grace)).isoformat()
        kept.insert(0, {"ciphertext": endpoint.secret_ciphertext, "expires_at": expires})
    secret, endpoint.secret_ciphertext = signing_secret_new()
    endpoint.previous_secrets = kept[:MAX_PREVIOUS_SECRETS]
    endpoint.save(update_fields=["secret_ciphertext", "previous_secrets", "updated_at"])
    _audit(endpoint, "webhook.secret_rotated", actor, grace_seconds=grace)
    return endpoint, secret


def previous_secret_expiry(endpoint: WebhookEndpoint) -> datetime | None:
    """When the last rotated-out secret stops signing (None: only the current one signs)."""
    now = timezone.now()
    times = [datetime.fromisoformat(e["expires_at"]) for e in endpoint.previous_secrets]
    return max((t for t in times if t > now), default=None)


# --- events -------------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def event_id_new() -> str:
    """`msg_` + a ULID (48 bits of milliseconds, 80 random bits, Crockford base32): unique,
    and sorted by time as text."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return "msg_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -5, -5))


def listening_probe(*, tenant_id: uuid.UUID | str, type: str) -> tuple[str, dict[str, Any]]:
    """An SQL boolean and its parameters: whether an enabled endpoint of the tenant listens
    for `type`. A statement that may lead to an event evaluates it with its own work (a turn's
    last write does), so a tenant without endpoints costs no query of its own."""
    sql = (
        "EXISTS (SELECT 1 FROM agentplatform_webhookendpoint WHERE tenant_id = %(p_tenant)s"
        " AND enabled AND events @> %(p_events)s::jsonb)"
    )
    return sql, {"p_tenant": tenant_id, "p_events": json.dumps([type])}


@unaudited("data plane: the event and its deliveries are their own record")
def event_publish(
    *, tenant_id: uuid.UUID | str, type: str, data: dict[str, Any]
) -> WebhookEvent | None:
    """Tell the tenant's endpoints subscribed to `type` that it happened, with `data` (a
    JSON object: ids and states, never secrets). Stores the event and its deliveries in the
    caller's transaction; the deliveries start after the commit. None when no enabled
    endpoint listens (nothing is stored)."""
    if type not in SUBSCRIBABLE:
        raise ValueError(f"unknown webhook event type {type!r}")
    endpoints = list(
        WebhookEndpoint.objects.filter(
            tenant_id=tenant_id, enabled=True, events__contains=[type]
        ).values_list("pk", flat=True)
    )
    if not endpoints:
        return None
    event, _ = _event_store(tenant_id=tenant_id, type=type, data=data, endpoints=endpoints)
    return event


@unaudited("a ping to the tenant's own endpoint, recorded in its delivery log")
def webhook_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Send a `webhook.test` event to this endpoint only (disabled or not)."""
    data = {"endpoint": str(endpoint.pk), "message": "A test event sent through the API."}
    _, deliveries = _event_store(
        tenant_id=endpoint.tenant_id,
        type=EventType.WEBHOOK_TEST,
        data=data,
        endpoints=[endpoint.pk],
    )
    return deliveries[0]


@transaction.atomic
def _event_store(
    *, tenant_id: uuid.UUID | str, type: str, data: dict[str, Any], endpoints: list[uuid.UUID]
) -> tuple[WebhookEvent, list[WebhookDelivery]]:
    now = timezone.now()
    body = {"type": type, "timestamp": now.isoformat(), "data": data}
    event = WebhookEvent.objects.create(
        id=event_id_new(),
        tenant_id=tenant_id,
        type=type,
        body=json.dumps(body, separators=(",", ":"), sort_keys=True, default=str),
    )
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(tenant_id=tenant_id, endpoint_id=pk, event=event, next_attempt_at=now)
        for pk in endpoints
    )
    _wake_after_commit(deliveries)
    return event, deliveries


def _wake_after_commit(deliveries: list[WebhookDelivery]) -> None:
    ids = [str(delivery.pk) for delivery in deliveries]

    def wake() -> None:
        for pk in ids:
            enqueue(DELIVER_TASK, pk)

    transaction.on_commit(wake)


@unaudited("the attempt it causes is recorded in the delivery's log")
@transaction.atomic
def webhook_delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send the delivery again now (same event, same `webhook-id`), whatever its state; if
    that fails, the retry schedule starts over."""
    delivery.status = WebhookDelivery.Status.PENDING
    delivery.scheduled_failures = 0
    delivery.next_attempt_at = timezone.now()
    delivery.save(update_fields=["status", "scheduled_failures", "next_attempt_at", "updated_at"])
    _wake_after_commit([delivery])
    return delivery


# --- reads --------------------------------------------------------------------------------


def webhook_endpoint_list(*, tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    endpoints: QuerySet[WebhookEndpoint] = WebhookEndpoint.objects.for_tenant(tenant)
    return endpoints


def access_webhook_endpoint(*, tenant: Tenant, id: object) -> WebhookEndpoint:
    return access_object(WebhookEndpoint, tenant=tenant, id=id)  # type: ignore[arg-type]


def webhook_delivery_list(
    *, endpoint: WebhookEndpoint, status: str | None = None, event_type: str | None = None
) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries with their events and attempts."""
    deliveries = WebhookDelivery.objects.filter(
        endpoint=endpoint, tenant_id=endpoint.tenant_id
    ).select_related("event")
    if status:
        deliveries = deliveries.filter(status=status)
    if event_type:
        deliveries = deliveries.filter(event__type=event_type)
    return deliveries.prefetch_related("log")


def access_webhook_delivery(*, endpoint: WebhookEndpoint, id: object) -> WebhookDelivery:
    """One of the endpoint's deliveries, or the uniform 404."""
    try:
        return webhook_delivery_list(endpoint=endpoint).get(pk=id)  # type: ignore[misc]
    except (WebhookDelivery.DoesNotExist, ValueError, ValidationError):
        raise NotFound("No webhook delivery with this id.") from None
