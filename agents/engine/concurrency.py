"""Per-session concurrency: a Redis lease, a PostgreSQL fencing token, and admission by the
agent's double-text policy.

The lease (`SET NX PX`) says who runs the session's turn now; it is renewed while the turn
streams and expires by itself when its holder dies. Acquiring it also writes the lease's
unique token into the session row (`lease_holder`); every PostgreSQL write of the turn is
conditional on the row still holding that token, so a holder that stalled past its lease
(and was replaced) can no longer write, whatever it believes about Redis.

The token write skips the WAL flush (`synchronous_commit = off`, ~0.1 ms instead of a
~4 ms fsync here): if a crash loses it, the row keeps an older token and the turn's own
write is refused, which is safe. The turn's messages commit durably.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from django.conf import settings
from django.db import connection

from agentplatform.http import idempotency
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import deferred, get_redis
from agents.conf import agents_settings
from agents.engine.ports import ClaimRead
from agents.models import Agent, Session
from agents.services import StaleLease

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Arrival order for the queue: one counter per session, so ties are impossible.
_ENQUEUE = """
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], n, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return n
"""
# Drop waiters at the head whose heartbeat stopped (their process died).
_PRUNE_DEAD = """
local heads = redis.call('ZRANGE', KEYS[1], 0, 4)
for _, ticket in ipairs(heads) do
  if redis.call('EXISTS', ARGV[1] .. ticket) == 0 then
    redis.call('ZREM', KEYS[1], ticket)
  end
end
return redis.call('ZRANK', KEYS[1], ARGV[2])
"""

POLL_SECONDS = 0.01
TICKET_ALIVE_MS = 5_000


class SessionBusy(Exception):
    """Another turn runs on the session and the policy is `reject`."""


class QueueTimeout(Exception):
    """The session stayed busy longer than AGENTS["QUEUE_WAIT_SECONDS"]."""


class ActionRequired(SessionBusy):
    """A run on the session waits for an action, and the policy cannot set it aside
    (`reject`, `enqueue`: it may wait for days)."""


class RunCancelled(Exception):
    """The run was cancelled while it waited for the session."""


class LeaseLost(StaleLease):
    """The turn's lease expired or was taken over; its writes are refused."""


@dataclass
class Lease:
    session_id: uuid.UUID
    holder: str  # also the fencing token written into the session row
    ttl_ms: int
    renewed_at: float = field(default_factory=time.monotonic)
    # The turn key of a run waiting for an action on this session, read with the claim.
    awaiting: str = ""
    # The running run's own cancel key (redis_keys.run_stop), checked with the session's.
    stop_key: str | None = None

    def renew(self) -> None:
        """Extend the lease; raises LeaseLost when another holder has it now."""
        ok = get_redis().eval(
            _RENEW, 1, redis_keys.lease(self.session_id), self.holder, self.ttl_ms
        )
        if not ok:
            raise LeaseLost("the session's lease was lost")
        self.renewed_at = time.monotonic()

    def renew_if_due(self) -> bool:
        """Renew when a third of the lease has passed; True when it renewed."""
        if time.monotonic() - self.renewed_at > self.ttl_ms / 3000:
            self.renew()
            return True
        return False

    def release(self) -> None:
        deferred("eval", _RELEASE, 1, redis_keys.lease(self.session_id), self.holder)

    def cancel_requested(self) -> str | None:
        """'interrupt' or 'rollback' when a newer message asked this turn to stop, 'cancel'
        when its run was cancelled."""
        keys = [redis_keys.cancel(self.session_id)]
        if self.stop_key is not None:
            keys.append(self.stop_key)
        values = cast(list[bytes | None], get_redis().mget(keys))
        if len(values) > 1 and values[1] is not None:
            return "cancel"
        if values[0] is None:
            return None
        holder, _, mode = values[0].decode().partition("|")
        return mode if holder == self.holder else None


# The claim also reads whether a run waits for an action on the session, may write the
# turn's run row (ClaimRow) and read what the turn reads next (ClaimRead): no extra round
# trip for any of them.
_CLAIM_ROW = """
WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
claim AS (
    UPDATE agents_session SET lease_holder = %(holder)s FROM async WHERE id = %(session)s
    RETURNING awaiting_turn
){row}
SELECT awaiting_turn{read} FROM claim
"""


class ClaimRow(Protocol):
    """A row written with the lease's claim (`sql`: an INSERT ... SELECT, completed with
    FROM claim), or by `insert()` when the turn has to wait for the session instead."""

    @property
    def sql(self) -> str: ...

    @property
    def params(self) -> dict[str, Any]: ...

    def insert(self) -> None: ...


@dataclass
class LeaseOffer:
    """The lease asked for within an open `write_batch()` (with the turn's first frame and
    its working memory read: one round trip); `taken` is known once the batch was sent."""

    session_id: uuid.UUID
    holder: uuid.UUID
    ttl_ms: int
    taken: bool = False

    def give_back(self) -> None:
        """The lease was taken but the turn will not go on (the batch failed)."""
        if self.taken:
            deferred("eval", _RELEASE, 1, redis_keys.lease(self.session_id), self.holder.hex)
            self.taken = False


def lease_offer(session: Session) -> LeaseOffer:
    """Ask for the session's lease in the open `write_batch()`; pass the offer to `admit`."""
    offer = LeaseOffer(session.pk, uuid.uuid4(), int(agents_settings().LEASE_SECONDS * 1000))

    def answered(result: Any) -> None:
        offer.taken = bool(result)

    key = redis_keys.lease(session.pk)
    deferred("set", key, offer.holder.hex, nx=True, px=offer.ttl_ms, then=answered)
    return offer


def lease_try_acquire(
    session: Session,
    *,
    stop_key: str | None = None,
    with_row: ClaimRow | None = None,
    offer: LeaseOffer | None = None,
    with_read: ClaimRead | None = None,
) -> Lease | None:
    """The session's lease, claimed in PostgreSQL too (the fencing token), or None when
    another turn holds it. With an `offer` already answered, Redis is not asked again."""
    if offer is not None:
        if not offer.taken:
            return None
        holder, ttl_ms = offer.holder, offer.ttl_ms
    else:
        ttl_ms = int(agents_settings().LEASE_SECONDS * 1000)
        holder = uuid.uuid4()
        if not get_redis().set(redis_keys.lease(session.pk), holder.hex, nx=True, px=ttl_ms):
            return None
    lease = Lease(session_id=session.pk, holder=holder.hex, ttl_ms=ttl_ms, stop_key=stop_key)
    params: dict[str, Any] = {"holder": holder, "session": session.pk}
    row_sql, read_sql = "", ""
    if with_row is not None:
        row_sql, params = f", row AS ({with_row.sql} FROM claim)", params | with_row.params
    if with_read is not None:
        read_sql, params = f", {with_read.columns}", params | with_read.params
    try:
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM_ROW.format(row=row_sql, read=read_sql), params)
            row = cursor.fetchone()
    except BaseException:
        lease.release()  # PostgreSQL is down, say: the next turn need not wait for expiry
        raise
    lease.awaiting = row[0] if row else ""
    if row and with_read is not None:
        with_read.take(tuple(row[1:]))
    return lease


def fence_check(session_id: uuid.UUID, holder: str) -> None:
    """Inside a transaction: lock the session row; refuse a holder whose lease was taken."""
    current = (
        Session.objects.select_for_update()
        .values_list("lease_holder", flat=True)
        .get(pk=session_id)
    )
    if current is None or current.hex != holder:
        raise LeaseLost("the session's lease was taken over by another turn")


def admit(
    *,
    session: Session,
    agent: Agent,
    on_queued: Callable[[int], None] | None = None,
    stop_key: str | None = None,
    with_row: ClaimRow | None = None,
    offer: LeaseOffer | None = None,
    with_read: ClaimRead | None = None,
) -> Lease:
    """Wait for the session per the agent's double-text policy; return the held lease.
    `stop_key` is the run's cancel key: set while the turn waits, it gives up. `with_row`
    is written with the claim, or before the turn waits. `offer` is the first try, made
    in a batch before; `with_read` is read with its claim (only that first try's: a turn
    that waited reads afresh)."""
    policy = agent.double_text_policy
    lease = lease_try_acquire(
        session, stop_key=stop_key, with_row=with_row, offer=offer, with_read=with_read
    )
    if lease is not None:
        return lease
    if policy == Agent.DoubleTextPolicy.REJECT:
        raise SessionBusy("A turn is already running on this session.")
    if with_row is not None:
        with_row.insert()
    if policy in (Agent.DoubleTextPolicy.INTERRUPT, Agent.DoubleTextPolicy.ROLLBACK):
        _request_cancel(session.pk, policy)
    return _wait_in_queue(session, policy=policy, on_queued=on_queued, stop_key=stop_key)


def _request_cancel(session_id: uuid.UUID, mode: str) -> None:
    client = get_redis()
    holder = cast(bytes | None, client.get(redis_keys.lease(session_id)))
    if holder is not None:
        ttl_ms = int(agents_settings().LEASE_SECONDS * 1000)
        client.set(redis_keys.cancel(session_id), f"{holder.decode()}|{mode}", px=ttl_ms)


def _wait_in_queue(
    session: Session,
    *,
    policy: str,
    on_queued: Callable[[int], None] | None,
    stop_key: str | None,
) -> Lease:
    client = get_redis()
    ticket = uuid.uuid4().hex
    queue, alive = redis_keys.turn_queue(session.pk), redis_keys.ticket_alive(session.pk, ticket)
    alive_prefix = redis_keys.ticket_alive(session.pk, "")
    wait = agents_settings().QUEUE_WAIT_SECONDS
    client.eval(_ENQUEUE, 3, queue, queue + ":n", alive, ticket, TICKET_ALIVE_MS, int(wait * 2000))
    deadline, last_position = time.monotonic() + wait, -1
    beat_every, beat_at = settings.IDEMPOTENCY_LOCK_SECONDS / 3, time.monotonic()
    try:
        while time.monotonic() < deadline:
            if time.monotonic() - beat_at > beat_every:
                # A queued turn is still running: its idempotency key must not lapse to a
                # retry while it waits (the lock is far shorter than the queue's wait).
                idempotency.heartbeat()
                beat_at = time.monotonic()
            client.set(alive, "1", px=TICKET_ALIVE_MS)
            if stop_key is not None and client.exists(stop_key):
                raise RunCancelled("The run was cancelled while it waited for the session.")
            rank = cast(int | None, client.eval(_PRUNE_DEAD, 1, queue, alive_prefix, ticket))
            position = 0 if rank is None else int(rank)
            if position == 0:
                lease = lease_try_acquire(session, stop_key=stop_key)
                if lease is not None:
                    return lease
                if policy != Agent.DoubleTextPolicy.ENQUEUE:
                    _request_cancel(session.pk, policy)
            if position != last_position and on_queued is not None:
                on_queued(position + 1)  # 1 = next to run once the current turn ends
            last_position = position
            time.sleep(POLL_SECONDS)
        raise QueueTimeout("The session stayed busy; try again later.")
    finally:
        client.zrem(queue, ticket)
        client.delete(alive)
