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
from typing import Any

from agentplatform import keys
from agentplatform.redis import deferred
from memory.conf import memory_settings
from memory.tasks import SCHEDULED_TTL_SECONDS, compact_session, extract_pending

PENDING_TTL_SECONDS = 86_400
COMPACTION_FLAG_SECONDS = 600

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
            extract_pending.apply_async(
                (str(tenant_id),), countdown=memory_settings().EXTRACTION_DELAY_SECONDS
            )

    # Within a turn this joins the turn's last Redis round trip (agentplatform.redis).
    pending, scheduled = keys.pending_extraction(tenant_id), keys.extraction_scheduled(tenant_id)
    deferred(
        "eval", _PUSH, 2, pending, scheduled, PENDING_TTL_SECONDS, SCHEDULED_TTL_SECONDS, *ids,
        then=schedule,
    )  # fmt: skip


def compaction_request(session_id: uuid.UUID, first_seq: int, last_seq: int) -> None:
    """Queue one compaction of the session unless one is already queued or running."""

    def schedule(claimed: Any) -> None:
        if claimed:
            compact_session.delay(str(session_id), first_seq, last_seq)

    flag = keys.compaction_scheduled(session_id)
    deferred("set", flag, "1", nx=True, ex=COMPACTION_FLAG_SECONDS, then=schedule)
