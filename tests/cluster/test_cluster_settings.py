"""The cluster URL and what start-up says about it: a bad URL or a cluster without a
Celery broker stops start-up with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agentplatform.devtools.testing import ROOT
from agentplatform.infra.redis_cluster import ClusterURL, ClusterURLError, parse_cluster_url
from agentplatform.project.celery_queues import NO_BROKER, broker_url

CLUSTER = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"


def test_a_cluster_url_lists_its_nodes_and_credentials() -> None:
    assert parse_cluster_url("redis+cluster://u:p%40ss@a:7000,b:7001/") == ClusterURL(
        (("a", 7000), ("b", 7001)), "u", "p@ss"
    )


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://a", "redis+cluster://a:1/3"])
def test_a_cluster_url_without_nodes_or_with_a_database_is_refused(url: str) -> None:
    with pytest.raises(ClusterURLError):
        parse_cluster_url(url)


def test_celery_needs_its_own_broker_beside_a_cluster_unless_eager() -> None:
    assert broker_url(None, redis_url="redis://h:1/0", eager=False) == "redis://h:1/0"
    assert broker_url("amqp://h//", redis_url=CLUSTER, eager=False) == "amqp://h//"
    assert broker_url(None, redis_url=CLUSTER, eager=True) == NO_BROKER


def _check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_cluster_without_a_broker_stops_start_up_naming_it() -> None:
    result = _check(REDIS_URL=CLUSTER, CELERY_TASK_ALWAYS_EAGER="0", CELERY_BROKER_URL="")
    assert result.returncode != 0
    assert "CELERY_BROKER_URL" in result.stderr


def test_a_malformed_cluster_url_stops_start_up_naming_it() -> None:
    result = _check(REDIS_URL="redis+cluster://nohost/2")
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr
