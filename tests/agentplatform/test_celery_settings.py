"""The Celery settings: the broker, the queues a worker consumes and the processes; a bad
value stops start-up naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentplatform.project.celery_queues import broker_transport_options, queue_names
from agentplatform.project.env import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_worker_queues_refuses_a_queue_that_does_not_exist() -> None:
    assert queue_names(["runs", "summaries"], name="WORKER_QUEUES") == ["runs", "summaries"]
    with pytest.raises(ConfigError, match="WORKER_QUEUES: no queue named extract"):
        queue_names(["runs", "extract"], name="WORKER_QUEUES")


def test_redis_options_go_only_to_a_redis_broker() -> None:
    amqp = broker_transport_options("amqp://h:5672//", key_prefix="ap", visibility_timeout=9)
    assert amqp == {"confirm_publish": True}
    redis = broker_transport_options("redis://h:6379/0", key_prefix="ap", visibility_timeout=9)
    assert redis["global_keyprefix"] == "ap:celery:"
    assert redis["visibility_timeout"] == 9


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CELERY_BROKER_URL", "ftp://broker"),
        ("WORKER_QUEUES", "runs,nope"),
        ("WORKER_CONCURRENCY", "0"),
    ],
)
def test_a_bad_celery_value_stops_start_up_naming_it(name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert name in result.stderr


def test_make_run_refuses_a_bad_web_concurrency_before_starting_anything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentplatform.devtools.devrun"],
        cwd=ROOT,
        env={**os.environ, "WEB_CONCURRENCY": "two"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "WEB_CONCURRENCY='two' is not an integer" in result.stderr
