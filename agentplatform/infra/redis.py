"""Shared Redis clients (one connection pool per process and URL), for a single Redis or a
Redis Cluster (REDIS_URL `redis+cluster://...`, agentplatform.infra.redis_cluster)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from django.conf import settings
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster, key_slot
from redis.exceptions import RedisClusterException

from agentplatform.infra.redis_cluster import is_cluster_url, parse_cluster_url


@functools.cache
def client_for(url: str) -> redis.Redis:
    """The process's client for `url`. A cluster's client is typed as `redis.Redis`: it
    offers the same commands, and routes each by its keys' slot (the platform keeps each
    command's keys in one slot: agentplatform.infra.redis_keys)."""
    if not is_cluster_url(url):
        client = redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)
        pool = client.connection_pool
        pool.connection_class = type(
            pool.connection_class.__name__, (_OneWrite, pool.connection_class), {}
        )
        return client
    cluster = parse_cluster_url(url)
    return cast(
        redis.Redis,
        RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
            username=cluster.username,
            password=cluster.password,
            socket_connect_timeout=2,
            health_check_interval=30,
        ),
    )


# Up to this size a batch goes in one socket write (see _OneWrite); beyond, redis-py's way.
ONE_WRITE_LIMIT = 512 * 1024


class _OneWrite:
    """A connection that sends a packed batch in one socket write. redis-py writes each
    value over 6,000 bytes on its own, to spare copying it: a turn's working memory is such a
    value, so its closing batch took three writes, and Redis read and answered it in two
    parts. A copy of a few KB costs far less than a write (on a VM, each write that wakes
    the other side is expensive: bench/turn_overhead.py's breakdown)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if (
            isinstance(command, list)
            and len(command) > 1
            and sum(len(part) for part in command) <= ONE_WRITE_LIMIT
        ):
            command = [b"".join(command)]
        super().send_packed_command(command, check_health)  # type: ignore[misc]


def get_redis() -> redis.Redis:
    return client_for(settings.REDIS_URL)


def on_cluster() -> bool:
    return is_cluster_url(settings.REDIS_URL)


def values(keys: list[str]) -> list[Any]:
    """GET of several keys: one MGET on a single Redis; on a cluster, which refuses MGET
    across slots, one per slot."""
    client = get_redis()
    return mget_per_slot(client, keys) if on_cluster() else cast(list[Any], client.mget(keys))


def mget_per_slot(client: Any, keys: list[Any]) -> list[Any]:
    """MGET on a cluster, one command per slot of `keys` (redis-py's own `mget_nonatomic`
    would send them as one pipeline spanning slots)."""
    by_slot: dict[int, list[Any]] = {}
    for key in keys:
        by_slot.setdefault(key_slot(key.encode() if isinstance(key, str) else key), []).append(key)
    found: dict[Any, Any] = {}
    for group in by_slot.values():
        found.update(zip(group, client.mget(group), strict=True))
    return [found[key] for key in keys]


def command_slot(command: str, args: tuple[Any, ...]) -> int:
    """The cluster slot of a command made through `deferred()`: its first key's (a script's
    keys follow the script and their count)."""
    key = args[2] if command in ("eval", "evalsha") else args[0]
    return key_slot(key.encode() if isinstance(key, str) else key)


@dataclass
class _Group:
    """The commands of one batch that go to one slot, with each one's `then` callback."""

    pipeline: Pipeline
    callbacks: list[tuple[int, Callable[[Any], None]]] = field(default_factory=list)
    last: int = 0  # when its latest command was made, to send the groups in order

    def send(self) -> None:
        """Every command's callback gets its result, even when another command of the
        pipeline failed (a lease it took must be known, to be given back); then the first
        error is raised."""
        results = self.pipeline.execute(raise_on_error=False)
        for index, callback in self.callbacks:
            if not isinstance(results[index], Exception):
                callback(results[index])
        failed = next((result for result in results if isinstance(result, Exception)), None)
        if failed is not None:
            raise failed


@dataclass
class _Batch:
    """On a single Redis, one pipeline; on a cluster, one per slot, so that no pipeline
    spans slots (sent one after the other, each group when its latest command's turn
    comes: a turn's lease release, made last, still goes last)."""

    cluster: bool
    groups: dict[int, _Group] = field(default_factory=dict)
    made: int = 0

    def add(self, command: str, args: tuple[Any, ...], kwargs: dict[str, Any], then: Any) -> None:
        slot = command_slot(command, args) if self.cluster else 0
        group = self.groups.get(slot)
        if group is None:
            group = self.groups[slot] = _Group(get_redis().pipeline(transaction=False))
        if command in ("eval", "evalsha"):  # redis-py's cluster pipeline hides these two
            group.pipeline.execute_command(command.upper(), *args, **kwargs)
        else:
            getattr(group.pipeline, command)(*args, **kwargs)
        if then is not None:
            group.callbacks.append((len(group.pipeline) - 1, then))
        self.made += 1
        group.last = self.made

    def send(self) -> None:
        """Every group is sent even when one fails (a node down must not keep the
        others' writes, such as the lease's release, from going); then the first error."""
        error: BaseException | None = None
        for group in sorted(self.groups.values(), key=lambda group: group.last):
            try:
                group.send()
            except BaseException as failed:
                error = error or failed
        if error is not None:
            raise error


_batch: ContextVar[_Batch | None] = ContextVar("agentplatform_redis_batch", default=None)


@contextlib.contextmanager
def write_batch() -> Iterator[None]:
    """Commands made through `deferred()` in the block are sent in one round trip when it
    ends (one per slot on a cluster), in the order they were made, whether the block
    succeeds or raises; then each command's `then` callback gets its result.

    For what nobody reads back within the block: a turn's follow-up requests, its final
    frames, its last working-memory save and its lease's release (which still comes last);
    and, at a turn's start, its `accepted` frame, the lease's offer and the working memory
    read, whose results are used once the block ended."""
    if _batch.get() is not None:  # already batching: the outer block sends
        yield
        return
    batch = _Batch(cluster=on_cluster())
    token = _batch.set(batch)
    try:
        yield
    except BaseException:
        _batch.reset(token)
        # The block's own error is the one to see.
        with contextlib.suppress(redis.RedisError, RedisClusterException):
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
    batch.add(command, args, kwargs, then)


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
