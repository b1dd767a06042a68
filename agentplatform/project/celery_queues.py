"""Celery's queues: one per kind of work, so a flood of one kind cannot starve another.

A worker consumes every queue unless WORKER_QUEUES (or `-Q`) names some, so a deployment can
give a kind its own workers. A worker that consumes several queues still takes turns among
them: with late acknowledgement and a prefetch of one, it holds a single message at a time,
and both brokers hand it the next one from its queues in rotation (kombu's Redis transport
cycles through the queues it listens to; RabbitMQ offers each queue with a consumer on the
channel its chance when the prefetch window frees), never the whole backlog of one queue
first, as a single shared queue would.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from kombu import Queue

from agentplatform.infra.redis_cluster import is_cluster_url
from agentplatform.project.env import ConfigError

DEFAULT_QUEUE = "celery"
# Task name -> queue. Tasks not listed go to DEFAULT_QUEUE.
ROUTES: dict[str, str] = {
    # Background runs, and beat's jobs that start or resume turns (LLM calls, tools).
    "agents.run_execute": "runs",
    "agents.schedule_fire": "runs",
    "agents.recover_turns": "runs",
    "memory.extract_memories": "extraction",
    "memory.extract_pending": "extraction",
    "memory.compact_session": "summaries",
    "memory.summarize_session": "summaries",
    "memory.summarize_idle_sessions": "summaries",
    "agentplatform.webhook_deliver": "webhooks",
    # Sweeps and housekeeping: short, periodic, nobody waits on them.
    "agents.expire_runs": "maintenance",
    "memory.extract_pending_sweep": "maintenance",
    "memory.enforce_retention": "maintenance",
    "memory.sample_storage": "maintenance",
    "agentplatform.purge_idempotency_records": "maintenance",
    "agentplatform.webhook_sweep": "maintenance",
    "agentplatform.webhook_purge": "maintenance",
    "agentplatform.audit_chain": "maintenance",
}
QUEUE_NAMES: tuple[str, ...] = (DEFAULT_QUEUE, *sorted(set(ROUTES.values())))
# Broker URL schemes: RabbitMQ's, and those of kombu's Redis transport.
AMQP = ("amqp", "amqps", "pyamqp")
BROKER_SCHEMES = (*AMQP, "redis", "rediss", "redis+socket")

# Kombu's in-memory transport: for eager mode on a Redis Cluster, where nothing is sent.
NO_BROKER = "memory://"


def broker_url(configured: str | None, *, redis_url: str, eager: bool) -> str:
    """CELERY_BROKER_URL when set; else Redis (REDIS_URL). A Redis Cluster cannot be the
    broker (kombu's Redis transport talks to one server, and its queues span keys a
    cluster would scatter over slots), so with a cluster REDIS_URL the broker must be named,
    unless tasks run eagerly (tests, one-off commands) and nothing is ever sent."""
    if configured:
        return configured
    if not is_cluster_url(redis_url):
        return redis_url
    if eager:
        return NO_BROKER
    raise ConfigError(
        "REDIS_URL names a Redis Cluster, which cannot be Celery's broker: set "
        "CELERY_BROKER_URL (amqp://... for RabbitMQ, or redis://... for a single Redis)."
    )


def queue_names(names: list[str], *, name: str) -> list[str]:
    """`names`, refused with a message naming the variable when one is not a queue."""
    unknown = sorted(set(names) - set(QUEUE_NAMES))
    if unknown:
        known = ", ".join(QUEUE_NAMES)
        raise ConfigError(f"{name}: no queue named {', '.join(unknown)} (queues: {known}).")
    return names


def task_queues() -> list[Queue]:
    """Durable queues (kombu's default) bound to Celery's direct exchange, each by its own
    name as routing key. On RabbitMQ they are classic queues: quorum queues replicate across
    a cluster's nodes but need Celery's native delayed delivery for countdowns, which a
    single node gains nothing from."""
    return [Queue(name, routing_key=name) for name in QUEUE_NAMES]


def task_routes() -> dict[str, dict[str, str]]:
    return {task: {"queue": queue} for task, queue in ROUTES.items()}


def is_amqp(broker_url: str) -> bool:
    return urlparse(broker_url).scheme in AMQP


def broker_transport_options(
    broker_url: str, *, key_prefix: str, visibility_timeout: int
) -> dict[str, Any]:
    """Redis emulates acknowledgement with a visibility timeout; RabbitMQ needs none: it
    puts a message back the moment the channel of the consumer holding it closes (a worker
    killed), and publisher confirms make a send return only once the broker has it."""
    if is_amqp(broker_url):
        return {"confirm_publish": True}
    if broker_url == NO_BROKER:
        return {}
    return {
        "global_keyprefix": f"{key_prefix}:celery:",
        # A task whose worker died unacknowledged is delivered again after this long.
        "visibility_timeout": visibility_timeout,
        # Look for such tasks every 10 s (one cheap sorted-set range): kombu's default scans
        # only every 10th sweep, so a dead worker's task could wait ~100 s past its timeout.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    }
