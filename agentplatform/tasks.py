"""Periodic housekeeping of the platform layer."""

from __future__ import annotations

from celery import shared_task

from agentplatform.core import rls
from agentplatform.http.idempotency import idempotency_purge_expired


@shared_task(name="agentplatform.purge_idempotency_records")
def purge_idempotency_records() -> int:
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "expired idempotency records"):
        return idempotency_purge_expired()
