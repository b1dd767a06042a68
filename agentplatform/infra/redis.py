"""Shared Redis clients (one connection pool per process and URL)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from redis.client import Pipeline


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)


def get_redis() -> redis.Redis:
    return _client(settings.REDIS_URL)


@dataclass
class _Batch:
    pipeline: Pipeline
    callbacks: list[tuple[int, Callable[[Any], None]]] = field(default_factory=list)

    def send(self) -> None:
        results = self.pipeline.execute()
        for index, callback in self.callbacks:
            callback(results[index])


_batch: ContextVar[_Batch | None] = ContextVar("agentplatform_redis_batch", default=None)


@contextlib.contextmanager
def write_batch() -> Iterator[None]:
    """Commands made through `deferred()` in the block are sent in one round trip when it
    ends, in the order they were made, whether the block succeeds or raises; then each
    command's `then` callback gets its result.

    For what nobody reads back within the block: a turn's follow-up requests, its last
    working-memory save and its lease's release (which still comes last)."""
    if _batch.get() is not None:  # already batching: the outer block sends
        yield
        return
    batch = _Batch(get_redis().pipeline(transaction=False))
    token = _batch.set(batch)
    try:
        yield
    except BaseException:
        _batch.reset(token)
        with contextlib.suppress(redis.RedisError):  # the block's own error is the one to see
            batch.send()
        raise
    _batch.reset(token)
    batch.send()


def deferred(
    command: str, *args: Any, then: Callable[[Any], None] | None = None, **kwargs: Any
) -> None:
    """Run a Redis command now, or queue it in the open `write_batch()`; `then` receives
    its result either way."""
    batch = _batch.get()
    if batch is None:
        result = getattr(get_redis(), command)(*args, **kwargs)
        if then is not None:
            then(result)
        return
    getattr(batch.pipeline, command)(*args, **kwargs)
    if then is not None:
        batch.callbacks.append((len(batch.pipeline) - 1, then))


class Script:
    """A Lua script called by its SHA (EVALSHA): Redis neither receives nor hashes the
    source on each call. Sent in full only when Redis does not know it (first use, or
    after a restart emptied its script cache)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's own key

    def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        client = get_redis()
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)
