"""Celery tasks of the platform layer: housekeeping and webhook delivery. Thin: ids in, the
tenant found, a service called; each is safe to run twice."""

from __future__ import annotations

from celery import shared_task

from agentplatform.core import rls
from agentplatform.core.audit import audit_chain as audit_chain_pending
from agentplatform.core.webhook_delivery import (
    deliveries_due,
    delivery_attempt,
    webhook_events_purge,
)
from agentplatform.core.webhooks import DELIVER_TASK
from agentplatform.http.idempotency import idempotency_purge_expired
from agentplatform.models import WebhookDelivery


@shared_task(name="agentplatform.purge_idempotency_records")
def purge_idempotency_records() -> int:
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "expired idempotency records"):
        return idempotency_purge_expired()


@shared_task(name=DELIVER_TASK, acks_late=True, ignore_result=True)
def webhook_deliver(delivery_id: str) -> str | None:
    """The delivery's due attempt (agentplatform/core/webhook_delivery.py), in its tenant's
    scope; a no-op when it is not due (a duplicate message, or already settled)."""
    tenant_id = rls.tenant_of(WebhookDelivery, delivery_id)
    if tenant_id is None:
        return None  # deleted with its endpoint
    with rls.tenant_scope(tenant_id):
        return delivery_attempt(delivery_id=delivery_id)


@shared_task(name="agentplatform.webhook_sweep")
def webhook_sweep() -> int:
    """Beat: send again the deliveries whose attempt is overdue (a lost message, a wait too
    long for a countdown, a worker that died mid-attempt)."""
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "overdue webhook deliveries"):
        due = deliveries_due()
    for delivery_id in due:
        webhook_deliver.delay(delivery_id)
    return len(due)


@shared_task(name="agentplatform.webhook_purge")
def webhook_purge() -> int:
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "expired webhook events"):
        return webhook_events_purge()


@shared_task(name="agentplatform.audit_chain", ignore_result=True)
def audit_chain() -> int:
    """Beat: link the audit events written since the last run into their tenants' chains
    (writers only insert; agentplatform/core/audit.py). Safe to overlap: chainers take turns
    per tenant."""
    with rls.cross_tenant(rls.CrossTenantReason.AUDIT_CHAINING):
        return audit_chain_pending()
