"""Every Redis key the platform writes is built here, under one configurable prefix.

Keeping them in one module means a reviewer can see every key, its owner and its TTL, and
erasure can find everything kept about a session.

Every key carries a Redis Cluster hash tag (the part in braces, which alone decides the
key's slot): `{s:<session>}` for a session's keys, `{t:<tenant>}` for a tenant's, so that
each Lua script, multi-key command and pipeline touches one slot, as a cluster requires
(tests/cluster/test_slots.py checks every operation). On a single Redis the braces are just
characters.
"""

from __future__ import annotations

from django.conf import settings


def _key(tag: str, *parts: object) -> str:
    return ":".join([settings.REDIS_KEY_PREFIX, "{" + tag + "}", *(str(part) for part in parts)])


def _session(session_id: object, *parts: object) -> str:
    return _key(f"s:{session_id}", *parts)


def _tenant(tenant_id: object, *parts: object) -> str:
    return _key(f"t:{tenant_id}", *parts)


def working_memory(session_id: object) -> str:
    """JSON working memory of a session (TTL: the agent's working_memory_ttl_seconds)."""
    return _session(session_id, "wm")


def lease(session_id: object) -> str:
    """The session's turn lease: holds the holder's fencing token (TTL: the lease time)."""
    return _session(session_id, "lease")


def fence_counter(session_id: object) -> str:
    """INCR source of fencing tokens (TTL refreshed with each lease)."""
    return _session(session_id, "fence")


def turn_queue(session_id: object) -> str:
    """Sorted set of waiting turn tickets, scored by arrival order (enqueue policy)."""
    return _session(session_id, "queue")


def ticket_alive(session_id: object, ticket: str) -> str:
    """Heartbeat of one waiting ticket; a waiter that died stops refreshing it."""
    return _session(session_id, "queue", "alive", ticket)


def cancel(session_id: object) -> str:
    """Cancel request for the running turn (interrupt / rollback policies)."""
    return _session(session_id, "cancel")


def run_stop(session_id: object, run_id: object) -> str:
    """Cancel request for one run: its turn stops streaming or leaves the queue (TTL)."""
    return _session(session_id, "cancel", "run", run_id)


def run_reaped(session_id: object, run_id: object) -> str:
    """Set when the reaper handled a stuck run, so the next sweep leaves it alone (TTL)."""
    return _session(session_id, "reaped", "run", run_id)


def session_prefix(session_id: object) -> str:
    """Pattern matching every key of one session (used by erasure and tests)."""
    return _session(session_id, "*")


def frame_seq(session_id: object) -> str:
    """Counter of the session's frame seqs (long TTL, refreshed on every frame)."""
    return _session(session_id, "frameseq")


def frame_stream(session_id: object) -> str:
    """Redis Stream of the session's frames, entry id `<seq>-1`, capped, with a TTL."""
    return _session(session_id, "frames")


def listeners(session_id: object) -> str:
    """Set of channel names of sockets open on the session (skip fan-out when empty)."""
    return _session(session_id, "listeners")


def recovery_attempts(session_id: object, turn_key: str) -> str:
    """How often the recovery task tried to finish one cut-off turn (TTL: its window)."""
    return _session(session_id, "recover", turn_key)


def compaction_scheduled(session_id: object) -> str:
    """Set while a compaction task of the session is queued or running (TTL: minutes)."""
    return _session(session_id, "compacting")


def pending_extraction(tenant_id: object) -> str:
    """List of the tenant's user-message ids awaiting memory extraction (TTL: a day)."""
    return _tenant(tenant_id, "extract")


def pending_extraction_tenant(name: str) -> str | None:
    """The tenant id in the name of a `pending_extraction` key; None for another key."""
    head, tail = pending_extraction("\0").split("\0")
    if not (name.startswith(head) and name.endswith(tail)) or len(name) <= len(head + tail):
        return None
    return name[len(head) : -len(tail)]


def extraction_scheduled(tenant_id: object) -> str:
    """Set while an extraction task of the tenant is queued (TTL: a minute)."""
    return _tenant(tenant_id, "extract", "scheduled")


def extraction_running(tenant_id: object) -> str:
    """Held by the extraction task draining the tenant's list (TTL: minutes)."""
    return _tenant(tenant_id, "extract", "running")


def credentials_epoch(tenant_id: object) -> str:
    """A random token replaced on every committed change of the tenant or of one of its API
    keys: each process uses the keys it kept while it holds (TTL: a day; once it lapses,
    kept keys are read again)."""
    return _tenant(tenant_id, "credentials")


def api_throttle(tenant_id: object) -> str:
    """Until when (ms) the tenant's API request budget is spent (TTL: that time)."""
    return _tenant(tenant_id, "throttle")


def login_failures(kind: str, value: str) -> str:
    """Failed admin logins from one address or for one username (TTL: the window)."""
    return _key(f"loginfail:{kind}:{value}")


def session_keys(session_id: object) -> list[str]:
    """Every fixed-name key of one session (erasure deletes these, plus queue tickets)."""
    return [
        working_memory(session_id),
        lease(session_id),
        turn_queue(session_id),
        turn_queue(session_id) + ":n",
        cancel(session_id),
        frame_seq(session_id),
        frame_stream(session_id),
        listeners(session_id),
        compaction_scheduled(session_id),
    ]


def ticket_pattern(session_id: object) -> str:
    """SCAN pattern of the session's queue-ticket heartbeats."""
    return ticket_alive(session_id, "*")
