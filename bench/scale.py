"""Scale-out on one machine: web and worker processes, on a single Redis and on a Redis Cluster.

For each Redis (the embedded single Redis, then a 3-primary Redis Cluster with replicas,
started here on loopback) and one RabbitMQ broker (started here):
- REST turns/s (10 sessions, one client thread each) and websocket messages/s (10 sockets)
  with 1 and 2 ASGI processes (`WEB_CONCURRENCY`), and the server's CPU per turn (the CPU
  time of its whole process tree over the measurement, divided by the turns);
- background runs/s with 1 and 2 worker processes (solo pool each, on the `runs` queue), and
  their CPU per run.

Prints and saves bench/results/scale.json. On a 2-core machine the client threads and the
server processes share the same two cores, so a second process cannot double anything: the
figures to carry to a larger machine are the per-process rates and the CPU per turn
(docs/scaling.md does that arithmetic).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, save, setup_django
from turn_overhead import _rest, _tenant_and_agent, _websocket

SESSIONS = 10
TURNS = 20  # per session and measurement
RUNS = 200
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of every live process in `root_pid`'s process group (a
    server and its uvicorn workers, a Celery worker and its children)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == root_pid:  # the process group (field 5 of stat)
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLOCK_TICKS


def _measured(pid: int, work: Any) -> dict[str, Any]:
    cpu_before, started = _tree_cpu_seconds(pid), time.perf_counter()
    count = work()
    elapsed, cpu = time.perf_counter() - started, _tree_cpu_seconds(pid) - cpu_before
    return {
        "n": count,
        "per_s": round(count / elapsed, 1),
        "server_cpu_ms_per_item": round(cpu / count * 1000, 2),
    }


def _web(tenant: Any, agent: Any, key: str, processes: int) -> dict[str, Any]:
    from agentplatform.core.audit import SYSTEM
    from agentplatform.devtools.testing import Server
    from agents.services import session_open

    unlimited = {"API_THROTTLE_RATE": "1000000/min", "AGENTS_WS_RATE_MESSAGES": "1000000"}
    server = Server({"SCRIPTED_LLM_DELAY": "0", **unlimited}, workers=processes)
    try:
        rest_turns = partial(_rest, server.url, agent, key, SESSIONS, TURNS)
        rest_turns()  # warm every process: imports, pools, statements
        rest = _measured(server.process.pid, lambda: rest_turns()["n"])
        sessions = [
            session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"ws{n}")
            for n in range(SESSIONS)
        ]
        ws_url = server.url.replace("http://", "ws://")
        ws = _measured(server.process.pid, lambda: _websocket(ws_url, sessions, key, TURNS)["n"])
    finally:
        server.stop()
    return {"rest_turns": rest, "websocket_messages": ws}


def _workers(tenant: Any, agent: Any, processes: int) -> dict[str, Any]:
    from django.db import transaction

    from agentplatform.core.audit import SYSTEM
    from agentplatform.devtools.testing import Worker, wait_until
    from agents.models import Run
    from agents.runs import run_create
    from agents.services import session_open

    sessions = [
        session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"run{n}") for n in range(50)
    ]

    def start(count: int) -> list[Any]:
        with transaction.atomic():
            return [
                run_create(session=sessions[n % len(sessions)], content=f"Task {n}.")
                for n in range(count)
            ]

    def finish(runs: list[Any]) -> int:
        ids = [run.pk for run in runs]
        done = Run.objects.filter(pk__in=ids, status=Run.Status.COMPLETED)
        wait_until(lambda: done.count() == len(ids), what="the runs", timeout=600)
        return len(ids)

    # Workers of the runs queue only, as docs/scaling.md deploys them: on RabbitMQ a worker
    # that also takes the extraction queue's countdown tasks holds them itself (Celery's ETA
    # handling) and was seen idle for 1-10 s between runs while runs were queued.
    workers = [
        Worker({"LOG_LEVEL": "WARNING", "WORKER_QUEUES": "runs"}, concurrency=1)
        for _ in range(processes)
    ]
    try:
        finish(start(10 * processes))  # warm every worker
        cpu_before = sum(_tree_cpu_seconds(w.process.pid) for w in workers)
        started = time.perf_counter()
        count = finish(start(RUNS))
        elapsed = time.perf_counter() - started
        cpu = sum(_tree_cpu_seconds(w.process.pid) for w in workers) - cpu_before
    finally:
        for worker in workers:
            worker.stop()
    return {
        "n": count,
        "per_s": round(count / elapsed, 1),
        "worker_cpu_ms_per_item": round(cpu / count * 1000, 2),
    }


def _one_redis(name: str, tenant: Any, agent: Any, key: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for processes in (1, 2):
        web = _web(tenant, agent, key, processes)
        results[f"web_{processes}"] = web
        print(f"{name:<8} {processes} web process(es): {web}")
    for processes in (1, 2):
        runs = _workers(tenant, agent, processes)
        results[f"workers_{processes}"] = runs
        print(f"{name:<8} {processes} worker process(es): background runs {runs}")
    return results


def main() -> None:
    from agentplatform.devtools.testing import RabbitMQ

    with tempfile.TemporaryDirectory(prefix="scale-bench-") as directory:
        broker = RabbitMQ(Path(directory) / "rabbitmq")
        try:
            broker.wait_ready()
            setup_django(CELERY_BROKER_URL=broker.url, CELERY_TASK_ALWAYS_EAGER="0")
            _bench(Path(directory))
        finally:
            broker.stop()


def _bench(directory: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from django.conf import settings
    from django.test import override_settings

    from agentplatform.infra.redis_cluster import cache_config, channel_layer_config
    from tests.cluster.local_cluster import LocalCluster

    tenant, agent, key = _tenant_and_agent()
    results = {"single": _one_redis("single", tenant, agent, key)}
    cluster = LocalCluster(directory / "cluster")
    try:
        cluster.start()
        prefix = settings.REDIS_KEY_PREFIX
        # This process (sessions, runs) and the servers and workers it starts (their REDIS_URL
        # comes from these settings) all on the cluster.
        on_cluster = override_settings(
            REDIS_URL=cluster.url,
            CACHES={"default": cache_config(cluster.url, f"{prefix}:cache")},
            CHANNEL_LAYERS={"default": channel_layer_config(cluster.url, f"{prefix}:channels")},
        )
        with on_cluster:
            results["cluster"] = _one_redis("cluster", tenant, agent, key)
    finally:
        cluster.stop()
    save("scale", {"sessions": SESSIONS, "turns_per_session": TURNS, "runs": RUNS, **results})
    tenant.delete()


if __name__ == "__main__":
    main()
