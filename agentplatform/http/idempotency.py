"""`Idempotency-Key` for POST endpoints: a repeat returns the first result and does no work.

Records live in PostgreSQL (per tenant, unique key) so a retry reaching any server instance,
after any crash, sees the same record. While the first request runs, the record is locked
for IDEMPOTENCY_LOCK_SECONDS; a repeat in that window gets 409, and a repeat after it (the first
holder died) takes the record over and runs again.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import connection, transaction
from django.http.response import HttpResponseBase
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from agentplatform.http.principal import request_tenant
from agentplatform.http.problems import Conflict
from agentplatform.models import IdempotencyRecord, Tenant

HEADER = "Idempotency-Key"
# Read from META: `request.headers` builds an object of every header to find one (its
# lookup is this same name, case-insensitive, as the server received it).
_META_NAME = "HTTP_" + HEADER.upper().replace("-", "_")


# Short, and extended by `heartbeat()` while a long request (a turn) runs: a retry after the
# first holder died waits at most this long.
def _lock() -> timedelta:
    return timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)


MAX_KEY_LENGTH = 255
RETRYABLE = {409, 429}

H = TypeVar("H", bound=Callable[..., HttpResponseBase])


# The record the work running in this context holds (see `running` and `heartbeat`).
_current: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "idempotency_record", default=None
)


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's key for one request, with what identifies the request it was used for."""

    key: str
    method: str
    path: str
    fingerprint: str


class KeyReused(Exception):
    """The key was already used for a different request."""


class InProgress(Exception):
    """A request with this key is still running."""


@dataclass(frozen=True)
class Claim:
    record_id: int
    replay: tuple[int, Any] | None  # (status, body) of the first request, when it finished
    # The key was new: no request ran under it before (nothing to resume or find).
    created: bool = False


# A new key in one statement (a duplicate is no error, so no transaction or savepoint is
# needed around it). Its commit skips the WAL flush: whatever the request then writes commits
# durably after it, which flushes this row too; if a crash loses the row, the request had
# written nothing durable, and a retry runs it afresh.
_CLAIM_NEW = f"""
WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO {IdempotencyRecord._meta.db_table}
    (tenant_id, key, method, path, fingerprint, locked_until, expires_at, created_at)
SELECT %(tenant)s, %(key)s, %(method)s, %(path)s, %(fingerprint)s, %(locked_until)s,
    %(expires_at)s, now()
FROM async
ON CONFLICT ON CONSTRAINT idempotency_unique_key DO NOTHING
RETURNING id
"""  # noqa: S608 - the table name comes from the model


def idempotency_claim(
    *, tenant: Tenant, key: str, method: str, path: str, fingerprint: str
) -> Claim:
    """Claim `key` for a request, or return the first request's result to replay.

    Raises KeyReused for another request under the same key, InProgress while the first
    still runs (and its lock is fresh). A lock that lapsed (its holder died) is taken over.
    """
    now = timezone.now()
    params: dict[str, Any] = {
        "tenant": tenant.pk,
        "key": key,
        "method": method,
        "path": path[:500],
        "fingerprint": fingerprint,
        "locked_until": now + _lock(),
        "expires_at": now + timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS),
    }
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_NEW, params)
        created = cursor.fetchone()
    if created is not None:
        return Claim(created[0], None, created=True)
    with transaction.atomic():
        record = IdempotencyRecord.objects.select_for_update().get(tenant=tenant, key=key)
        live = record.expires_at > now
        if live and record.fingerprint != fingerprint:
            raise KeyReused("This key was already used for a different request.")
        if live and record.status_code is not None:
            return Claim(record.pk, (record.status_code, record.response_body))
        if live and record.locked_until and record.locked_until > now:
            raise InProgress("A request with this Idempotency-Key is still in progress.")
        # Expired, or the first holder died: take it over.
        record.fingerprint = fingerprint
        record.status_code = None
        record.response_body = None
        record.locked_until = now + _lock()
        record.expires_at = now + timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
        record.save()
        return Claim(record.pk, None)


def idempotent(handler: H) -> H:
    """Decorate a DRF POST handler (`def post(self, request, ...)`) to honour the header."""

    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        key = request_idempotency_key(request)
        if key is None:
            return handler(view, request, *args, **kwargs)
        try:
            claim = idempotency_claim(
                tenant=request_tenant(request),
                key=key.key,
                method=key.method,
                path=key.path,
                fingerprint=key.fingerprint,
            )
        except KeyReused as error:
            raise ValidationError({HEADER: [str(error)]}) from None
        except InProgress as error:
            raise Conflict(str(error)) from None
        if claim.replay is not None:
            return replay_response(*claim.replay)
        with running(claim.record_id):
            try:
                response = handler(view, request, *args, **kwargs)
            except BaseException:
                idempotency_release(claim.record_id)
                raise
        idempotency_complete(claim.record_id, response.status_code, getattr(response, "data", None))
        return response

    return cast(H, wrapper)


def request_idempotency_key(request: Request) -> IdempotencyKey | None:
    """The request's Idempotency-Key with its fingerprint, if it sent one; 422 when the
    header is empty or too long."""
    key = request.META.get(_META_NAME)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValidationError({HEADER: [f"Must be 1 to {MAX_KEY_LENGTH} characters."]})
    method = request.method or "POST"
    fingerprint = request_fingerprint(method, request.path, request.data)
    return IdempotencyKey(key=key, method=method, path=request.path, fingerprint=fingerprint)


@contextlib.contextmanager
def running(record_id: int | None) -> Iterator[None]:
    """Mark the work in this context (this thread) as holding `record_id`, so that
    `heartbeat()` calls made deep inside it extend that record's lock."""
    token = _current.set(record_id)
    try:
        yield
    finally:
        _current.reset(token)


def key_digest(tenant_id: object, key: str) -> str:
    """A stable name for the work done under one tenant's key (a turn's `turn_key`): the
    same on every retry, whichever server instance takes it."""
    return hashlib.sha256(f"{tenant_id}:{key}".encode()).hexdigest()[:32]


def request_fingerprint(method: str, path: str, data: Any) -> str:
    body = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(f"{method} {path}\n{body}".encode()).hexdigest()


def replay_response(status_code: int, body: Any) -> Response:
    response = Response(body, status=status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotency_complete(record_id: int, status_code: int, data: Any) -> None:
    # Server errors, conflicts and throttling are not remembered: the request did not run,
    # so a retry with the same key must be able to run it (Stripe does the same).
    if status_code in RETRYABLE or status_code >= 500 or data is None:
        idempotency_release(record_id)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _COMPLETE,
            {"id": record_id, "status": status_code, "body": json.dumps(data, default=str)},
        )


# The first response, kept for repeats. Its commit skips the WAL flush: the request's own
# writes committed durably before it; if a crash loses this row, the key stays locked until
# its lock lapses and a retry then takes it over, and a turn retried so finds its finished
# run (agents.engine.turn) instead of running twice.
_COMPLETE = f"""
WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE {IdempotencyRecord._meta.db_table}
SET status_code = %(status)s, response_body = %(body)s::jsonb, locked_until = NULL
FROM async WHERE id = %(id)s
"""  # noqa: S608 - the table name comes from the model


def idempotency_release(record_id: int, *, forget: bool = True) -> None:
    """Let a retry run the request again: the key is forgotten (the request did nothing),
    or kept with its lock lifted (it did part of its work: a retry takes the key over, and
    a turn resumes what its first attempt left)."""
    pending = IdempotencyRecord.objects.filter(pk=record_id, status_code__isnull=True)
    if forget:
        pending.delete()
    else:
        pending.update(locked_until=None)


def heartbeat() -> None:
    """Extend the lock of the record this request is running under, if any."""
    record_id = _current.get()
    if record_id is not None:
        IdempotencyRecord.objects.filter(pk=record_id, status_code__isnull=True).update(
            locked_until=timezone.now() + _lock()
        )


def idempotency_purge_expired() -> int:
    """Delete expired records; returns how many."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
