"""Webhook delivery: latency and throughput through one Celery worker to a loopback receiver.

Prints and saves bench/results/webhooks.json:
- latency from `event_publish` (its commit included) to the receiver reading the request,
  p50/p99, one event at a time;
- deliveries per second through one worker process (solo pool), a burst of events published
  in one transaction, until the last delivery is recorded as succeeded.
Each delivery is a real signed POST through agentplatform.infra.outbound (resolution,
address checks, a fresh connection) and two transactions (claim, record).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, save, setup_django, summary_ms

LATENCY_EVENTS = 200
BURST_EVENTS = 1000


def _wait(condition: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.001)


def _latencies(tenant: Any, hook: Any, count: int) -> list[float]:
    from agentplatform.core.webhooks import event_publish

    seconds = []
    for index in range(count):
        before = len(hook.received)
        started = time.monotonic()
        event_publish(tenant_id=tenant.pk, type="run.completed", data={"run": f"r{index}"})
        _wait(lambda n=before: len(hook.received) > n, "a delivery")
        seconds.append(hook.received[-1].at - started)
    return seconds


def _throughput(tenant: Any, hook: Any) -> dict[str, Any]:
    from django.db import transaction

    from agentplatform.core.webhooks import event_publish
    from agentplatform.models import WebhookDelivery

    before = WebhookDelivery.objects.filter(status="succeeded").count()
    started = time.monotonic()
    with transaction.atomic():
        for index in range(BURST_EVENTS):
            event_publish(tenant_id=tenant.pk, type="run.completed", data={"run": f"b{index}"})
    published = time.monotonic() - started
    done = WebhookDelivery.objects.filter(status="succeeded")
    _wait(lambda: done.count() >= before + BURST_EVENTS, "the burst")
    elapsed = time.monotonic() - started
    return {
        "events": BURST_EVENTS,
        "publish_seconds": round(published, 3),
        "seconds": round(elapsed, 3),
        "deliveries_per_second": round(BURST_EVENTS / elapsed, 1),
    }


def main() -> None:
    setup_django(OUTBOUND_ALLOWED_NETWORKS="127.0.0.0/8", CELERY_TASK_ALWAYS_EAGER="0")
    sys.path.insert(0, str(ROOT))
    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create
    from agentplatform.core.webhooks import webhook_endpoint_create
    from agentplatform.devtools.testing import Worker
    from tests.loopback import Receiver

    hook = Receiver()
    tenant, _ = tenant_create(actor=SYSTEM, slug=f"bench-{uuid.uuid4().hex[:8]}")
    webhook_endpoint_create(tenant=tenant, url=f"{hook.url}/in", events=["run.completed"],
                            actor=SYSTEM)  # fmt: skip
    worker = Worker({"LOG_LEVEL": "WARNING"})
    try:
        _latencies(tenant, hook, 20)  # warm-up: the worker's imports and connections
        latency = summary_ms(_latencies(tenant, hook, LATENCY_EVENTS))
        throughput = _throughput(tenant, hook)
    finally:
        worker.stop()
        hook.stop()
    print(f"publish -> receipt: p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms "
          f"({latency['n']} events, one at a time)")  # fmt: skip
    print(f"throughput: {throughput['deliveries_per_second']} deliveries/s through one worker "
          f"({BURST_EVENTS} events)")  # fmt: skip
    save("webhooks", {"latency": latency, "throughput": throughput, "worker": "1 process, solo"})


if __name__ == "__main__":
    main()
