"""Storage accounting: rows and bytes each tenant keeps in each store, sampled daily.

PostgreSQL bytes are the rows' own sizes (`pg_column_size`, after compression), not their
share of indexes; Redis bytes are `MEMORY USAGE` of the keys of the tenant's recently active
sessions (every Redis key of a session has a TTL, so older sessions hold none).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from agentplatform.core.audit import unaudited
from agentplatform.core.dbrouter import read_alias, reads_may_lag
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agentplatform.models import Tenant
from agents.models import Session
from memory.models import StorageSample

# store name -> table; every table has tenant_id.
TABLES = {
    "messages": "agents_message",
    "summaries": "memory_summary",
    "memories": "memory_memory",
    "checkpoints": "memory_checkpoint",
    "langgraph": "memory_graphcheckpoint",
    "langgraph_blobs": "memory_graphblob",
}
REDIS_WINDOW_DAYS = 31  # the longest TTL of a session's keys (its frame counter, 30 days)


@dataclass(frozen=True)
class Usage:
    store: str
    rows: int
    bytes: int


def storage_usage(*, tenant: Tenant) -> list[Usage]:
    """Counted on the replica when there is one: a daily sample tolerates any lag, and the
    scans it makes over a tenant's rows are better kept off the primary."""
    with reads_may_lag():
        return [*_postgres_usage(tenant, connections[read_alias()]), _redis_usage(tenant)]


def _postgres_usage(tenant: Tenant, connection: BaseDatabaseWrapper) -> list[Usage]:
    usage = []
    with connection.cursor() as cursor:
        for store, table in TABLES.items():
            cursor.execute(
                f"SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM {table} t "  # noqa: S608
                "WHERE tenant_id = %s",
                [tenant.pk],
            )
            rows, size = cursor.fetchone()
            usage.append(Usage(store, int(rows), int(size)))
    return usage


def _redis_usage(tenant: Tenant) -> Usage:
    since = timezone.now() - datetime.timedelta(days=REDIS_WINDOW_DAYS)
    sessions = Session.objects.filter(tenant=tenant, last_activity_at__gte=since)
    client = get_redis()
    rows = size = 0
    for session_id in sessions.values_list("pk", flat=True).iterator(chunk_size=500):
        pipe = client.pipeline(transaction=False)
        for name in redis_keys.session_keys(session_id):
            pipe.memory_usage(name)
        for used in pipe.execute():
            if used:
                rows += 1
                size += int(used)
    return Usage("redis", rows, size)


@unaudited("measurements of the stores, not changes to what a tenant keeps")
def storage_sample(*, tenant: Tenant, day: datetime.date | None = None) -> list[StorageSample]:
    """Record today's usage of `tenant` (a second sample the same day replaces the first)."""
    day = day or timezone.localdate()
    samples = []
    for usage in storage_usage(tenant=tenant):
        sample, _ = StorageSample.objects.update_or_create(
            tenant=tenant,
            taken_on=day,
            store=usage.store,
            defaults={"rows": usage.rows, "bytes": usage.bytes},
        )
        samples.append(sample)
    return samples


@unaudited("measurements of the stores, not changes to what a tenant keeps")
def storage_sample_all() -> int:
    count = 0
    for tenant in Tenant.objects.filter(status=Tenant.Status.ACTIVE).iterator():
        storage_sample(tenant=tenant)
        count += 1
    return count
