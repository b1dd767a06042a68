"""The cluster suite: one Redis Cluster for the whole test session, and each test of this
package pointed at it (REDIS_URL, the cache and the channel layer), emptied around it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from agentplatform.infra.redis import get_redis
from agentplatform.infra.redis_cluster import cache_config, channel_layer_config
from tests.cluster.local_cluster import LocalCluster, available


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if not available():
        pytest.skip("redis-server is not installed (make system-tools installs it)")
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def cluster_settings(url: str) -> override_settings:
    prefix = settings.REDIS_KEY_PREFIX
    return override_settings(
        REDIS_URL=url,
        CACHES={"default": cache_config(url, f"{prefix}:cache")},
        CHANNEL_LAYERS={"default": channel_layer_config(url, f"{prefix}:channels")},
    )


@pytest.fixture(autouse=True)
def on_cluster(redis_cluster: LocalCluster) -> Iterator[LocalCluster]:
    redis_cluster.flush()
    with cluster_settings(redis_cluster.url):
        yield redis_cluster
    redis_cluster.flush()


@pytest.fixture
def redis_client(on_cluster: LocalCluster) -> redis.Redis:
    """The platform's own client, on the cluster (tests read keys through it)."""
    return get_redis()


@pytest.fixture
def single_redis_url() -> str:
    """The suite's single Redis (tests/embedded_services.py), for comparisons."""
    return os.environ["REDIS_URL"]
