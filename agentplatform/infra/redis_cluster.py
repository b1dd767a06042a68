"""`REDIS_URL` naming a Redis Cluster: `redis+cluster://[user:password@]host:port,host:port,...`.

The nodes listed are only where the client starts: it learns the whole topology (every
primary and replica) from any one of them, and again after a failover moves slots. A cluster
has only database 0, so the URL takes no database number.

Each consumer of Redis gets what works on a cluster: the platform's own client is redis-py's
`RedisCluster` (agentplatform.infra.redis), the Django cache a backend built on it
(agentplatform.infra.cluster_cache), and the channel layer channels-redis's pub/sub layer on
a connection that moves to another node when its node dies (`AnyNodeConnection`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from redis.asyncio.connection import Connection

CLUSTER_SCHEME = "redis+cluster"


class ClusterURLError(ValueError):
    """A `redis+cluster://` URL that names no usable node."""


@dataclass(frozen=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def is_cluster_url(url: str) -> bool:
    return url.startswith(f"{CLUSTER_SCHEME}://")


def parse_cluster_url(url: str) -> ClusterURL:
    """The nodes and credentials of a cluster URL; ClusterURLError says what is wrong."""
    rest = url.removeprefix(f"{CLUSTER_SCHEME}://")
    netloc, _, path = rest.partition("/")
    if path.split("?")[0] not in ("", "0"):
        raise ClusterURLError("a Redis Cluster has only database 0; drop the /N from the URL")
    credentials, _, hosts = netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes = tuple(_node(item) for item in hosts.split(",") if item)
    if not nodes:
        raise ClusterURLError("no host:port listed")
    return ClusterURL(nodes, unquote(username) or None, unquote(password) or None)


def _node(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterURLError(f"{item!r} is not host:port")
    return host.strip("[]"), int(port)


class AnyNodeConnection(Connection):
    """An asyncio connection to whichever node of `nodes` answers, tried in turn from a
    random start (spreading processes over the nodes).

    For the channel layer's classic pub/sub: a cluster forwards every PUBLISH to all its
    nodes, so a subscriber on any node hears a publisher on any other. When the node dies,
    redis-py reconnects this connection (to the next live node) and subscribes its channels
    again, so fan-out survives a failover; what was published in the gap is not lost to a
    socket, which fills gaps in its seqs from the session's frame stream (agents.live)."""

    def __init__(self, *, nodes: tuple[tuple[str, int], ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nodes = nodes
        self._next = random.randrange(len(nodes))  # noqa: S311 - load spreading, not secrecy

    async def _connect(self) -> None:
        error: Exception | None = None
        for _ in self.nodes:
            self.host, self.port = self.nodes[self._next]
            try:
                await super()._connect()
                return
            except OSError as failed:  # refused, unreachable, timed out: try the next node
                error = failed
                self._next = (self._next + 1) % len(self.nodes)
        assert error is not None
        raise error


def channel_layer_config(url: str, prefix: str) -> dict[str, Any]:
    """CHANNEL_LAYERS["default"] for REDIS_URL, a single Redis or a cluster."""
    if not is_cluster_url(url):
        return {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": prefix},
        }
    cluster = parse_cluster_url(url)
    host = {
        "connection_class": AnyNodeConnection,
        "nodes": cluster.nodes,
        "username": cluster.username,
        "password": cluster.password,
        "socket_connect_timeout": 2,
    }
    # One channels-redis "shard" for the whole cluster: its own sharding would pin each
    # group to one node's address, which a failover takes away.
    return {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [host], "prefix": prefix},
    }


def cache_config(url: str, prefix: str) -> dict[str, Any]:
    """CACHES["default"] for REDIS_URL: django-redis on a single Redis; on a cluster,
    Django's own Redis backend with a RedisCluster client (django-redis has no cluster
    client)."""
    if not is_cluster_url(url):
        return {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    return {
        "BACKEND": "agentplatform.infra.cluster_cache.ClusterRedisCache",
        "LOCATION": url,
        "KEY_PREFIX": prefix,
    }
