"""After-turn work (memory extraction, compaction) handed to Celery off the turn's path.

Sending a Celery message costs ~1 ms here, more than all the rest of a turn's Redis work,
and neither job has to start within the same second. So a turn appends its user-message
ids to the tenant's pending list and, in the same Lua call, claims a short `scheduled`
flag: only the turn that claims it sends a task, with a small countdown, and every turn of
the tenant until then shares that task. The task clears the flag before it drains the
list, so an id pushed meanwhile is either drained by it or schedules the next run. A lost
task (a worker killed) loses nothing: the ids stay listed, the flag expires, and the next
turn or the beat sweep schedules again. Ids are removed only after they were processed.

Compaction is deduplicated the same way, one flag per session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, cast

from agentplatform.core import rls
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import deferred, get_redis
from agentplatform.infra.tasks import enqueue
from memory.conf import memory_settings
from memory.learning import memories_extract

PENDING_TTL_SECONDS = 86_400
COMPACTION_FLAG_SECONDS = 600
SCHEDULED_TTL_SECONDS = 60
RUNNING_TTL_SECONDS = 600
DRAIN_BATCH = 200
# The tasks of memory.tasks, named rather than imported: a service never imports a transport.
EXTRACT_PENDING = "memory.extract_pending"
COMPACT_SESSION = "memory.compact_session"

_PUSH = """
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  return 1
end
return 0
"""


def extraction_request(tenant_id: uuid.UUID, message_ids: Iterable[int]) -> None:
    """Queue these user messages for memory extraction (after the turn's commit)."""
    ids = [str(message_id) for message_id in message_ids]
    if not ids:
        return

    def schedule(claimed: Any) -> None:
        if claimed:
            enqueue(
                EXTRACT_PENDING,
                str(tenant_id),
                countdown=memory_settings().EXTRACTION_DELAY_SECONDS,
            )

    # Within a turn this joins the turn's last Redis round trip (agentplatform.infra.redis).
    pending, scheduled = (
        redis_keys.pending_extraction(tenant_id),
        redis_keys.extraction_scheduled(tenant_id),
    )
    deferred(
        "eval", _PUSH, 2, pending, scheduled, PENDING_TTL_SECONDS, SCHEDULED_TTL_SECONDS, *ids,
        then=schedule,
    )  # fmt: skip


def compaction_request(session_id: uuid.UUID, first_seq: int, last_seq: int) -> None:
    """Queue one compaction of the session unless one is already queued or running."""

    def schedule(claimed: Any) -> None:
        if claimed:
            enqueue(COMPACT_SESSION, str(session_id), first_seq, last_seq)

    flag = redis_keys.compaction_scheduled(session_id)
    deferred("set", flag, "1", nx=True, ex=COMPACTION_FLAG_SECONDS, then=schedule)


def pending_drain(*, tenant_id: str) -> int | None:
    """Extract memories from the tenant's pending messages, oldest first; ids leave the
    list only once processed. None when another run holds the list (retry later)."""
    client = get_redis()
    pending = redis_keys.pending_extraction(tenant_id)
    running = redis_keys.extraction_running(tenant_id)
    client.delete(redis_keys.extraction_scheduled(tenant_id))
    if not client.set(running, "1", nx=True, ex=RUNNING_TTL_SECONDS):
        return None
    stored = 0
    try:
        with rls.tenant_scope(tenant_id):
            while True:
                raw = cast(list[bytes], client.lrange(pending, 0, DRAIN_BATCH - 1))
                if not raw:
                    return stored
                stored += memories_extract(message_ids=[int(item) for item in raw])
                client.ltrim(pending, len(raw), -1)
    finally:
        client.delete(running)


def pending_tenants_unscheduled() -> list[str]:
    """Tenants whose ids wait with no task queued (a task was lost, or the tenant went
    quiet right after its flag expired); claims each one's flag for the caller to enqueue."""
    client = get_redis()
    claimed = []
    for name in client.scan_iter(match=redis_keys.pending_extraction("*"), count=500):
        tenant_id = redis_keys.pending_extraction_tenant(name.decode())
        if tenant_id is None or not client.llen(name):
            continue
        if client.set(
            redis_keys.extraction_scheduled(tenant_id), "1", nx=True, ex=SCHEDULED_TTL_SECONDS
        ):
            claimed.append(tenant_id)
    return claimed
