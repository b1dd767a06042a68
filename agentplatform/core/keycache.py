"""API keys kept in each process's memory: a REST request's key costs no PostgreSQL round trip.

A key read from PostgreSQL is kept, with its tenant, under its prefix, together with the
tenant's credentials epoch: a random token in Redis (redis_keys.credentials_epoch) that every
committed change of the tenant or of one of its keys replaces (`announce`: saves and
deletes through post_save/post_delete, a queryset's update() through `credentials_changed`).
A kept key is used while the epoch in Redis is still the one it was kept under, instead of
the SQL lookup (a GET; over REST the throttle's script checks it, agentplatform.http.
throttling.Prepaid, so no round trip of its own), and a revocation or a suspension reaches
every process as soon as it committed.

Why it holds:
- The epoch is read BEFORE the SQL lookup whose result it guards: a change committed after
  that lookup replaces the epoch after it was read, so the key is not used again. The tenant
  is only known from the key's row, so the first request with a key in a process reads
  PostgreSQL and learns its tenant; the next reads the epoch first, then the key, and keeps it.
- A random token, not a counter: a Redis that lost its data (a restart without persistence)
  cannot hand out an old value again; a missing epoch matches nothing.
- A change that was not announced is bounded by API_KEY_CACHE_SECONDS (a key kept longer is
  read again, whatever its epoch): SQL run by hand, a process killed between its commit and
  the announcement, Redis down at that moment (logged). After changing keys by hand, delete
  the tenant's epoch (`redis_keys.credentials_epoch`): a missing epoch matches nothing.
- Each request gets its own model instances, built from the kept values, so nothing one
  request does to them reaches another.
- Redis unreachable on the way in: the key is read from PostgreSQL, as without the cache.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save
from redis.exceptions import RedisClusterException

from agentplatform.infra import redis_keys, rows
from agentplatform.infra.redis import deferred, get_redis, write_batch
from agentplatform.models import ApiKey, Tenant, credentials_changed

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=Model)

EPOCH_TTL_SECONDS = 86_400
MAX_KEPT = 10_000  # prefixes per process; the oldest go first
_REDIS_ERRORS = (redis.RedisError, RedisClusterException)

# Whether a kept key's tenant epoch still holds (`epoch_is_current`, or the REST throttle's
# script that also spends the tenant's budget, agentplatform.http.throttling.Prepaid).
EpochCheck = Callable[[Tenant, bytes], bool]


@dataclass(frozen=True)
class _Kept:
    tenant_id: str
    epoch: bytes
    kept_at: float  # time.monotonic()
    key: tuple[Any, ...]  # the key's field values, in its concrete fields' order
    tenant: tuple[Any, ...]


_lock = threading.Lock()
_kept: dict[str, _Kept] = {}
_tenant_of: dict[str, str] = {}  # prefix -> tenant id, learnt from the key's row (immutable)


def kept_key(prefix: str, usable: Callable[[ApiKey], bool], current: EpochCheck) -> ApiKey | None:
    """The key kept under `prefix`, with its tenant, as new instances, when `usable` (its
    secret and status, checked before anything is sent: a kept key that is refused spends
    no budget) and `current` (its tenant's epoch is still the one it was kept under); else
    None: read it from PostgreSQL."""
    kept = _kept.get(prefix)
    if kept is None or time.monotonic() - kept.kept_at > settings.API_KEY_CACHE_SECONDS:
        return None
    key = _instance(ApiKey, kept.key)
    key.tenant = _instance(Tenant, kept.tenant)
    if not usable(key):
        return None
    try:
        return key if current(key.tenant, kept.epoch) else None
    except _REDIS_ERRORS:
        # Read from PostgreSQL, then throttled as usual: if the reply was lost after the
        # script ran, the budget is spent twice for this request (rare, and only budget).
        return None


def kept_secret_hash(prefix: str) -> str | None:
    """The secret's hash of the key kept under `prefix`, whatever its age or epoch: a key's
    secret never changes, so a secret that does not match it is wrong (refused without a
    round trip, however often it is tried)."""
    kept = _kept.get(prefix)
    return None if kept is None else str(kept.key[_HASHED_SECRET])


def epoch_is_current(tenant: Tenant, epoch: bytes) -> bool:
    """The plain check: one GET."""
    return bool(get_redis().get(redis_keys.credentials_epoch(tenant.pk)) == epoch)


def epoch_before_lookup(prefix: str) -> bytes | None:
    """The epoch to keep the key of `prefix` under, read before the key is looked up: None
    when its tenant is not known yet in this process (or caching is off, or Redis fails)."""
    tenant_id = _tenant_of.get(prefix)
    if tenant_id is None or not settings.API_KEY_CACHE_SECONDS:
        return None
    name = redis_keys.credentials_epoch(tenant_id)
    try:
        pipeline = get_redis().pipeline(transaction=False)  # one key: one slot
        pipeline.set(name, secrets.token_hex(16), nx=True, ex=EPOCH_TTL_SECONDS)
        pipeline.get(name)
        _, epoch = pipeline.execute()
    except _REDIS_ERRORS:
        return None
    return epoch if isinstance(epoch, bytes) else None


def keep(key: ApiKey, epoch: bytes | None) -> None:
    """Remember `key`'s tenant, and the key itself when it was looked up after `epoch` was
    read (both dicts evict their oldest entries first)."""
    tenant_id = str(key.tenant_id)
    with _lock:
        _tenant_of.pop(key.prefix, None)
        _tenant_of[key.prefix] = tenant_id
        _kept.pop(key.prefix, None)
        if epoch is not None:
            values = _values(key), _values(key.tenant)
            _kept[key.prefix] = _Kept(tenant_id, epoch, time.monotonic(), *values)
        for mapping in (_kept, _tenant_of):
            while len(mapping) > MAX_KEPT:
                mapping.pop(next(iter(mapping)))


def used(key: ApiKey, at: datetime) -> None:
    """The key's last_used_at was set to `at`: so is the kept copy's (or every request would
    find it a minute old and write it again)."""
    index = _LAST_USED
    with _lock:
        kept = _kept.get(key.prefix)
        if kept is not None:
            values = (*kept.key[:index], at, *kept.key[index + 1 :])
            _kept[key.prefix] = replace(kept, key=values)


def announce(tenant_ids: Iterable[uuid.UUID | str], using: str = DEFAULT_DB_ALIAS) -> None:
    """The credentials of these tenants change in the current transaction of `using`: this
    process forgets their keys now, and every process once it committed (their epochs
    replaced). Robust: a callback of the same transaction that failed before must not keep
    this one from running."""
    tenants = {str(tenant_id) for tenant_id in tenant_ids}
    if not tenants:
        return
    _forget(tenants)
    transaction.on_commit(partial(_replace_epochs, tenants), using=using, robust=True)


def _replace_epochs(tenants: set[str]) -> None:
    _forget(tenants)  # kept meanwhile from a read before the commit
    try:
        with write_batch():  # one round trip (one per slot on a cluster)
            for tenant_id in sorted(tenants):
                name = redis_keys.credentials_epoch(tenant_id)
                deferred("set", name, secrets.token_hex(16), ex=EPOCH_TTL_SECONDS)
    except _REDIS_ERRORS:
        # The change is committed; other processes may use their kept keys of these tenants
        # for up to API_KEY_CACHE_SECONDS more.
        logger.exception("could not announce a credentials change of tenants %s", tenants)


def _forget(tenants: set[str]) -> None:
    with _lock:
        for prefix in [prefix for prefix, kept in _kept.items() if kept.tenant_id in tenants]:
            del _kept[prefix]


def forget_all() -> None:
    """Drop everything kept in this process (tests)."""
    with _lock:
        _kept.clear()
        _tenant_of.clear()


def _values(obj: Model) -> tuple[Any, ...]:
    return tuple(getattr(obj, name) for name in rows.attnames(type(obj)))


def _instance(model: type[M], values: tuple[Any, ...]) -> M:
    # The kept values are converted already: from_db, not rows.from_row.
    return model.from_db(DEFAULT_DB_ALIAS, rows.attnames(model), list(values))


_LAST_USED = rows.attnames(ApiKey).index("last_used_at")
_HASHED_SECRET = rows.attnames(ApiKey).index("hashed_secret")


# --- what announces a change ------------------------------------------------------------------


def _tenant_id(row: ApiKey | Tenant) -> uuid.UUID:
    return row.pk if isinstance(row, Tenant) else row.tenant_id


def _saved(sender: type[Model], instance: ApiKey | Tenant, created: bool, **kwargs: Any) -> None:
    fields = kwargs.get("update_fields")
    if created or (fields is not None and set(fields) <= ApiKey.UNCACHED_FIELDS):
        return  # a new row was never kept; last_used_at decides nothing
    announce([_tenant_id(instance)], kwargs.get("using", DEFAULT_DB_ALIAS))


def _deleted(sender: type[Model], instance: ApiKey | Tenant, **kwargs: Any) -> None:
    announce([_tenant_id(instance)], kwargs.get("using", DEFAULT_DB_ALIAS))


def _update_announced(
    sender: type[Model], tenant_ids: Iterable[uuid.UUID | str], using: str, **kwargs: Any
) -> None:
    announce(tenant_ids, using)


def connect() -> None:
    """Called once, from the app's ready()."""
    uid = "agentplatform.core.keycache"
    for model in (ApiKey, Tenant):
        name = model.__name__
        post_save.connect(_saved, sender=model, dispatch_uid=f"{uid}.saved.{name}")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"{uid}.deleted.{name}")
    credentials_changed.connect(_update_announced, dispatch_uid=f"{uid}.updated")
