"""The Django cache on a Redis Cluster (REDIS_URL `redis+cluster://...`).

Django's own Redis backend, given the platform's RedisCluster client instead of a pool per
server (its LOCATION would otherwise be split at the commas into separate servers), with the
two operations that send several keys at once made slot-safe: a cluster refuses MGET and
MSET across slots, and cache keys carry no hash tag (each is its own slot). The console's
charts are its only user, one key at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient, RedisSerializer

from agentplatform.infra.redis import client_for, mget_per_slot


class ClusterCacheClient(RedisCacheClient):
    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self.url = servers[0]
        self.serializer = RedisSerializer()

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        return client_for(self.url)

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        keys = list(keys)
        found = mget_per_slot(self.get_client(), keys)
        return {
            key: self.serializer.loads(value)
            for key, value in zip(keys, found, strict=True)
            if value is not None
        }

    def set_many(self, data: Mapping[Any, Any], timeout: Any) -> None:
        if timeout == 0:  # Django's meaning: expire at once
            self.get_client(write=True).delete(*data)
            return
        client = self.get_client(write=True)
        for key, value in data.items():  # each key is its own slot: no pipeline spans slots
            client.set(key, self.serializer.dumps(value), ex=timeout)


class ClusterRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._servers = [server]  # the whole cluster URL, not split at its commas
        self._class = ClusterCacheClient
