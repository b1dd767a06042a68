"""Turns cut off between LLM calls (their server or worker died) are finished here.

Under `every_llm_call` such a turn left an open checkpoint. Once its lease has expired (so
its holder is surely gone) the recovery task resumes it from that checkpoint, exactly as a
client's retry under the same key would: recorded tool results are reused, the remaining
LLM calls run, the reply is stored and announced. Attempts per turn are bounded, so a turn
whose LLM keeps failing is left for the client to retry.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

from agentplatform.core import rls
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents.conf import agents_settings
from agents.engine.ports import state_backend
from agents.engine.runs import run_find
from agents.engine.turn import TURN_FAILURES, turn_run
from agents.models import Message, Run, Session


def turns_recover() -> int:
    """Resume every open turn whose lease expired; returns how many finished."""
    conf = agents_settings()
    now = timezone.now()
    state = state_backend()
    finished = 0
    with rls.cross_tenant(rls.CrossTenantReason.MAINTENANCE, "open turns"):
        open_turns = state.open_turns(
            since=now - timedelta(seconds=conf.RECOVERY_WINDOW_SECONDS),
            until=now - timedelta(seconds=conf.LEASE_SECONDS),
        )
    for session_id, turn_key in open_turns:
        tenant_id = rls.tenant_of(Session, session_id)
        if tenant_id is None:
            continue
        with rls.tenant_scope(tenant_id):
            finished += _turn_recover(session_id, turn_key)
    return finished


def _turn_recover(session_id: uuid.UUID, turn_key: str) -> bool:
    conf = agents_settings()
    client = get_redis()
    if client.exists(redis_keys.lease(session_id)):
        return False  # a turn runs on the session now (perhaps this one, retried)
    attempts = redis_keys.recovery_attempts(session_id, turn_key)
    tries = int(client.incr(attempts))  # type: ignore[arg-type]
    client.expire(attempts, conf.RECOVERY_WINDOW_SECONDS)
    if tries > conf.RECOVERY_ATTEMPTS:
        return False
    session = Session.objects.select_related("agent", "tenant").filter(pk=session_id).first()
    if session is None:
        return False
    progress = state_backend().turn_progress(session=session, turn_key=turn_key)
    if progress is None or not progress.resumable:
        return False
    user = progress.messages[0]
    if user.role != Message.Role.USER:
        return False
    run = run_find(session, turn_key)
    if run is not None and run.status == Run.Status.REQUIRES_ACTION:
        return False  # it waits for answers, not for a worker
    try:
        turn_run(session=session, content=user.content, turn_key=turn_key, run=run)
    except TURN_FAILURES:
        return False
    return True
