"""`Idempotency-Key` for POST endpoints: a repeat returns the first result and does no work.

Records live in PostgreSQL (per tenant, unique key) so a retry reaching any server instance,
after any crash, sees the same record. While the first request runs, the record is locked
for IDEMPOTENCY_LOCK_SECONDS; a repeat in that window gets 409, and a repeat after it (the first
holder died) takes the record over and runs again.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http.response import HttpResponseBase
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from agentplatform.authentication import request_tenant
from agentplatform.models import IdempotencyRecord, Tenant
from agentplatform.problems import Conflict

HEADER = "Idempotency-Key"


# Short, and extended by `heartbeat()` while a long request (a turn) runs: a retry after the
# first holder died waits at most this long.
def _lock() -> timedelta:
    return timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)


MAX_KEY_LENGTH = 255
RETRYABLE = {409, 429}

H = TypeVar("H", bound=Callable[..., HttpResponseBase])


@dataclass
class _Running:
    record_id: int
    deferred: bool = False  # a streamed response completes the record when it ends


_current: contextvars.ContextVar[_Running | None] = contextvars.ContextVar(
    "idempotency_record", default=None
)


class KeyReused(Exception):
    """The key was already used for a different request."""


class InProgress(Exception):
    """A request with this key is still running."""


@dataclass(frozen=True)
class Claim:
    record_id: int
    replay: tuple[int, Any] | None  # (status, body) of the first request, when it finished


def idempotency_claim(
    *, tenant: Tenant, key: str, method: str, path: str, fingerprint: str
) -> Claim:
    """Claim `key` for a request, or return the first request's result to replay.

    Raises KeyReused for another request under the same key, InProgress while the first
    still runs (and its lock is fresh). A lock that lapsed (its holder died) is taken over.
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                tenant=tenant,
                key=key,
                method=method,
                path=path[:500],
                fingerprint=fingerprint,
                locked_until=now + _lock(),
                expires_at=now + timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS),
            )
        return Claim(record.pk, None)
    except IntegrityError:
        pass
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
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValidationError({HEADER: [f"Must be 1 to {MAX_KEY_LENGTH} characters."]})
        method = request.method or "POST"
        try:
            claim = idempotency_claim(
                tenant=request_tenant(request),
                key=key,
                method=method,
                path=request.path,
                fingerprint=request_fingerprint(method, request.path, request.data),
            )
        except KeyReused as error:
            raise ValidationError({HEADER: [str(error)]}) from None
        except InProgress as error:
            raise Conflict(str(error)) from None
        if claim.replay is not None:
            return _replay(*claim.replay)
        running = _Running(claim.record_id)
        token = _current.set(running)
        try:
            response = handler(view, request, *args, **kwargs)
        except BaseException:
            idempotency_release(claim.record_id)
            raise
        finally:
            _current.reset(token)
        if not running.deferred:
            idempotency_complete(
                claim.record_id, response.status_code, getattr(response, "data", None)
            )
        return response

    return cast(H, wrapper)


def key_digest(tenant_id: object, key: str) -> str:
    """A stable name for the work done under one tenant's key (a turn's `turn_key`): the
    same on every retry, whichever server instance takes it."""
    return hashlib.sha256(f"{tenant_id}:{key}".encode()).hexdigest()[:32]


def request_key(request: Request) -> str | None:
    """The digest of the request's Idempotency-Key, if it sent one."""
    key = request.headers.get(HEADER)
    return key_digest(request_tenant(request).pk, key) if key else None


def request_fingerprint(method: str, path: str, data: Any) -> str:
    body = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(f"{method} {path}\n{body}".encode()).hexdigest()


def _replay(status_code: int, body: Any) -> Response:
    response = Response(body, status=status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotency_complete(record_id: int, status_code: int, data: Any) -> None:
    # Server errors, conflicts and throttling are not remembered: the request did not run,
    # so a retry with the same key must be able to run it (Stripe does the same).
    if status_code in RETRYABLE or status_code >= 500 or data is None:
        idempotency_release(record_id)
        return
    IdempotencyRecord.objects.filter(pk=record_id).update(
        status_code=status_code,
        response_body=json.loads(json.dumps(data, default=str)),
        locked_until=None,
    )


def idempotency_release(record_id: int) -> None:
    IdempotencyRecord.objects.filter(pk=record_id, status_code__isnull=True).delete()


def defer_completion() -> Callable[[int, Any], None] | None:
    """For a streamed response: the function that records its outcome when the stream ends
    (status code and JSON body; a body of None releases the key). None without a key."""
    running = _current.get()
    if running is None:
        return None
    running.deferred = True
    record_id = running.record_id
    return lambda status_code, data: idempotency_complete(record_id, status_code, data)


def heartbeat() -> None:
    """Extend the lock of the record this request is running under, if any."""
    running = _current.get()
    if running is not None:
        IdempotencyRecord.objects.filter(pk=running.record_id, status_code__isnull=True).update(
            locked_until=timezone.now() + _lock()
        )


def idempotency_purge_expired() -> int:
    """Delete expired records; returns how many."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
