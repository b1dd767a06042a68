"""Delivering webhook events: one attempt at a time, the database as the source of truth.

An attempt claims its delivery (a row lock, then `next_attempt_at` pushed past the attempt's
longest possible end, so neither another worker nor the sweep takes it meanwhile), POSTs the
event's stored body through `agentplatform.infra.outbound` (no redirects followed, bounded
time and response), and records the outcome:
- 2xx: delivered;
- 410 Gone: the receiver says the endpoint is gone: the delivery fails and the endpoint is
  disabled, with the reason recorded;
- a refused address: fails at once (trying again cannot change the rules);
- anything else (3xx, 4xx, 5xx, no answer): tried again after the next wait of
  RETRY_SCHEDULE, with jitter, and no sooner than the receiver's Retry-After (bounded); when
  the schedule runs out, the delivery fails.
Every attempt of one event carries the same `webhook-id` (the event's id), so receivers can
drop duplicates; the timestamp and signatures are made fresh for each attempt.

A worker that dies mid-attempt leaves the claim to run out; the beat sweep then sends the
delivery again. Each attempt is one row of the delivery's log.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from agentplatform.core.audit import SYSTEM, unaudited
from agentplatform.core.webhooks import (
    DELIVER_TASK,
    EventType,
    signing_secrets,
    webhook_endpoint_disable,
    webhook_settings,
)
from agentplatform.infra import outbound
from agentplatform.infra.tasks import enqueue
from agentplatform.models import WebhookAttempt, WebhookDelivery, WebhookEvent

USER_AGENT = "agentplatform-webhooks/1"
EXCERPT_CHARS = 500
# A claim outlives the attempt's timeout by this much before the sweep may send it again.
CLAIM_MARGIN_SECONDS = 60
Status = WebhookDelivery.Status


@dataclass(frozen=True)
class _Claim:
    delivery_id: uuid.UUID
    tenant_id: uuid.UUID
    number: int
    url: str
    event_id: str
    body: str
    secrets: list[str]


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    latency_ms: int
    error: str = ""
    excerpt: str = ""
    retry_after: float | None = None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def sign(*, secrets: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of id.timestamp.body>` per
    secret, space-separated.

    Signed with the `standardwebhooks` package, the Standard Webhooks reference library that
    receivers verify with (`Webhook(secret).verify(body, headers)`): the signed string, the
    secret's decoding and the encoding are then the same code on both sides, not a
    re-implementation that could drift from it."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)


@unaudited("data plane: each attempt is recorded in the delivery's log")
def delivery_attempt(*, delivery_id: uuid.UUID | str) -> str | None:
    """Make the delivery's due attempt and record it; the delivery's status after it, or
    None when nothing was due (not yet time, another worker has it, or it is settled).
    Safe to run twice. Runs in the delivery's tenant scope; holds no transaction while the
    receiver answers."""
    claim = _claim(delivery_id)
    if claim is None:
        return None
    return _record(claim, _post(claim))


@transaction.atomic
def _claim(delivery_id: uuid.UUID | str) -> _Claim | None:
    now = timezone.now()
    delivery = (
        WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("endpoint", "event")
        .filter(pk=delivery_id, status=Status.PENDING, next_attempt_at__lte=now)
        .first()
    )
    if delivery is None:
        return None
    endpoint, event = delivery.endpoint, delivery.event
    if not endpoint.enabled and event.type != EventType.WEBHOOK_TEST:
        _settle(delivery, Status.CANCELLED, error="The endpoint is disabled.")
        return None
    delivery.attempts += 1
    lost_after = webhook_settings().TIMEOUT_SECONDS + CLAIM_MARGIN_SECONDS
    delivery.next_attempt_at = now + timedelta(seconds=lost_after)
    delivery.save(update_fields=["attempts", "next_attempt_at", "updated_at"])
    return _Claim(delivery.pk, delivery.tenant_id, delivery.attempts, endpoint.url, event.pk,
                  event.body, signing_secrets(endpoint, now=now))  # fmt: skip


def _post(claim: _Claim) -> _Outcome:
    config = webhook_settings()
    timestamp = timezone.now()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": claim.event_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": sign(
            secrets=claim.secrets, msg_id=claim.event_id, timestamp=timestamp, body=claim.body
        ),
    }
    started = time.monotonic()
    try:
        response = outbound.request(
            "POST", claim.url, content=claim.body.encode(), headers=headers,
            timeout=config.TIMEOUT_SECONDS, max_bytes=config.MAX_RESPONSE_BYTES,
        )  # fmt: skip
    except outbound.OutboundError as error:
        return _Outcome(
            status_code=getattr(error, "status", None),
            latency_ms=_ms_since(started),
            error=str(error)[:500],
            refused=isinstance(error, outbound.OutboundRefused),
        )
    return _Outcome(
        status_code=response.status,
        latency_ms=round(response.elapsed * 1000),
        error=_status_error(response),
        excerpt=response.body[:EXCERPT_CHARS].decode("utf-8", "replace"),
        retry_after=outbound.retry_after_seconds(response.headers.get("retry-after")),
    )


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _status_error(response: outbound.OutboundResponse) -> str:
    if 200 <= response.status < 300:
        return ""
    if response.status in outbound.REDIRECT_STATUSES:
        return f"Redirect ({response.status}) not followed: give the final URL."
    return f"The receiver answered {response.status}."


@transaction.atomic
def _record(claim: _Claim, outcome: _Outcome) -> str:
    delivery = (
        WebhookDelivery.objects.select_for_update(of=("self",))
        .select_related("endpoint")
        .get(pk=claim.delivery_id)
    )
    WebhookAttempt.objects.create(
        tenant_id=claim.tenant_id, delivery=delivery, number=claim.number,
        status_code=outcome.status_code, latency_ms=outcome.latency_ms,
        error=outcome.error, response_excerpt=outcome.excerpt,
    )  # fmt: skip
    delivery.last_status_code = outcome.status_code
    delivery.last_latency_ms = outcome.latency_ms
    delivery.last_error = outcome.error
    if outcome.delivered:
        _settle(delivery, Status.SUCCEEDED)
    elif outcome.status_code == 410:
        reason = f"The receiver answered 410 Gone to event {claim.event_id}."
        webhook_endpoint_disable(endpoint=delivery.endpoint, reason=reason, actor=SYSTEM)
        _settle(delivery, Status.FAILED)
    elif outcome.refused:
        _settle(delivery, Status.FAILED)
    else:
        _retry_or_fail(delivery, outcome)
    return str(delivery.status)


def _settle(delivery: WebhookDelivery, status: str, *, error: str | None = None) -> None:
    delivery.status = status
    delivery.next_attempt_at = None
    if error is not None:
        delivery.last_error = error
    delivery.save()


def _retry_or_fail(delivery: WebhookDelivery, outcome: _Outcome) -> None:
    delay = retry_delay(delivery.scheduled_failures + 1, retry_after=outcome.retry_after)
    delivery.scheduled_failures += 1
    if delay is None:
        _settle(delivery, Status.FAILED)
        return
    delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    delivery.save()
    if delay <= webhook_settings().COUNTDOWN_MAX_SECONDS:
        pk = str(delivery.pk)
        transaction.on_commit(lambda: enqueue(DELIVER_TASK, pk, countdown=delay))


def retry_delay(failures: int, *, retry_after: float | None = None) -> float | None:
    """Seconds to wait after the `failures`-th failed attempt, None when the schedule is
    over: the scheduled wait with jitter, and at least the receiver's Retry-After (bounded)."""
    config = webhook_settings()
    if failures > len(config.RETRY_SCHEDULE):
        return None
    base = config.RETRY_SCHEDULE[failures - 1]
    delay = base * random.uniform(1 - config.JITTER, 1 + config.JITTER)  # noqa: S311 - spread
    if retry_after is not None:
        delay = max(delay, min(retry_after, config.RETRY_AFTER_MAX_SECONDS))
    return delay


def deliveries_due() -> list[str]:
    """Pending deliveries whose attempt is overdue (their Celery message was lost, their
    wait was too long for one, or their worker died mid-attempt), of every tenant: the
    sweep's work. Run in the cross-tenant scope."""
    config = webhook_settings()
    cutoff = timezone.now() - timedelta(seconds=config.SWEEP_GRACE_SECONDS)
    due = WebhookDelivery.objects.filter(status=Status.PENDING, next_attempt_at__lte=cutoff)
    ids = due.order_by("next_attempt_at").values_list("pk", flat=True)[: config.SWEEP_BATCH]
    return [str(pk) for pk in ids]


@unaudited("expiry of the delivery log after WEBHOOKS RETENTION_DAYS, as idempotency records")
def webhook_events_purge() -> int:
    """Delete events (with their deliveries and attempts) older than the retention period;
    run in the cross-tenant scope. Returns how many events."""
    cutoff = timezone.now() - timedelta(days=webhook_settings().RETENTION_DAYS)
    _, per_model = WebhookEvent.objects.filter(created_at__lt=cutoff).delete()
    return per_model.get(WebhookEvent._meta.label, 0)
