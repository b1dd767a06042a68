"""No per-tenant write serialization (issue 16, goal 4): 20 concurrent sessions of ONE
tenant against 20 sessions spread over 20 tenants, doing audited writes.

Every audited write appends an audit event (agentplatform/core/audit.py). Writers only insert;
the chainer links events into each tenant's hash chain afterwards, so one tenant's writers
should go as fast as twenty tenants' writers. Two paths, each in alternating rounds (one
tenant, twenty tenants, one, twenty, ...: on a shared 2-core machine the load drifts from
minute to minute), throughput as the median of the rounds:

- services: 20 threads of this process, each in its tenant's row-level security scope,
  opening and deleting sessions (`session.opened`, `session.deleted`): little besides the
  audited write itself, so any per-tenant lock would show most here;
- REST: 20 clients against uvicorn with two worker processes (writers of one tenant on
  every process), storing and deleting memories of their own end user
  (`memory.created`, `memory.deleted`; embedding included).

A chainer thread runs as beat would (every CHAIN_INTERVAL s) during the measurement; at the
end it links what is left, and `verify_audit`'s check runs over every chain. Prints and
saves bench/results/tenancy.json.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, save, setup_django, summary_ms

CLIENTS = 20
ROUNDS = 5
SERVICE_PAIRS = 25  # open+delete pairs per client and round (2 audited writes each)
REST_PAIRS = 6  # store+delete pairs per client and round
CHAIN_INTERVAL = 10.0  # seconds, as beat's agentplatform.audit_chain
GOAL = 0.9  # one tenant within 10% of twenty tenants
Assignment = list[tuple[Any, Any, str]]  # client -> (tenant, agent, API key)


def _tenants(count: int) -> Assignment:
    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create
    from agents.services import agent_create

    made = []
    for _ in range(count):
        tenant, key = tenant_create(actor=SYSTEM, slug=f"bench-{uuid.uuid4().hex[:8]}")
        made.append((tenant, agent_create(actor=SYSTEM, tenant=tenant, name="bench"), key))
    return made


def _run_clients(work: Callable[[int], list[float]]) -> tuple[float, list[float], int]:
    """`work(client)` in CLIENTS threads at once; (elapsed seconds, every write's latency,
    clients that failed)."""
    latencies: list[float] = []
    failed: list[BaseException] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        try:
            times = work(index)
        except Exception as error:  # counted and reported: a failed client voids the round
            with lock:
                failed.append(error)
            print(f"client {index} failed: {error!r}")
            return
        with lock:
            latencies.extend(times)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, len(failed)


def _services(assignment: Assignment) -> dict[str, Any]:
    from django.db import connection

    from agentplatform.core import rls
    from agentplatform.core.audit import SYSTEM
    from agents.services import session_delete, session_open

    def work(index: int) -> list[float]:
        tenant, agent, _ = assignment[index]
        times = []
        with rls.tenant_scope(tenant.pk):
            for _ in range(SERVICE_PAIRS):
                started = time.perf_counter()
                session = session_open(
                    tenant=tenant, agent=agent, user_id=f"u{index}", actor=SYSTEM
                )
                times.append(time.perf_counter() - started)
                started = time.perf_counter()
                session_delete(session=session, actor=SYSTEM)
                times.append(time.perf_counter() - started)
        connection.close()
        return times

    return _rate(*_run_clients(work))


def _rest(url: str, assignment: Assignment) -> dict[str, Any]:
    import requests

    def work(index: int) -> list[float]:
        _, _, key = assignment[index]
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {key}"
        times = []
        for n in range(REST_PAIRS):
            text = f"client {index} prefers delivery window {uuid.uuid4().hex[:6]} ({n})"
            started = time.perf_counter()
            made = http.post(f"{url}/api/v1/memories/", json={"user_id": f"u{index}", "text": text})
            times.append(time.perf_counter() - started)
            assert made.status_code == 201, made.text
            started = time.perf_counter()
            gone = http.delete(f"{url}/api/v1/memories/{made.json()['id']}/")
            times.append(time.perf_counter() - started)
            assert gone.status_code == 204, gone.text
        return times

    return _rate(*_run_clients(work))


def _rate(elapsed: float, latencies: list[float], failed: int) -> dict[str, Any]:
    rate = round(len(latencies) / elapsed, 1)
    return {**summary_ms(latencies), "writes_per_s": rate, "failed_clients": failed}


class Chainer(threading.Thread):
    """Beat's chainer, in this process: links pending events every CHAIN_INTERVAL s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()
        self.linked = 0
        self.seconds = 0.0

    def chain(self) -> None:
        from django.db import connection

        from agentplatform.core import rls
        from agentplatform.core.audit import audit_chain

        started = time.perf_counter()
        with rls.cross_tenant(rls.CrossTenantReason.AUDIT_CHAINING, "bench"):
            self.linked += audit_chain()
        self.seconds += time.perf_counter() - started
        connection.close()

    def run(self) -> None:
        while not self.stopping.wait(CHAIN_INTERVAL):
            self.chain()


def _compare(
    name: str, measure: Callable[[Assignment], dict[str, Any]], one: Assignment, many: Assignment
) -> dict[str, Any]:
    """Alternating rounds of one tenant and twenty tenants; medians and their ratio."""
    measure(many)  # warm-up: connections, the embedder, the server's imports
    rounds: dict[str, list[dict[str, Any]]] = {"one_tenant": [], "twenty_tenants": []}
    for _ in range(ROUNDS):
        rounds["one_tenant"].append(measure(one))
        rounds["twenty_tenants"].append(measure(many))
    result: dict[str, Any] = {}
    for label, each in rounds.items():
        result[label] = {
            "writes_per_s": round(statistics.median(r["writes_per_s"] for r in each), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in each), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in each), 3),
            "rounds": [r["writes_per_s"] for r in each],
            "failed_clients": sum(r["failed_clients"] for r in each),
        }
    ratio = result["one_tenant"]["writes_per_s"] / result["twenty_tenants"]["writes_per_s"]
    result["ratio_one_over_twenty"] = round(ratio, 3)
    for label in rounds:
        print(f"{name:<9} {label:<15} {result[label]}")
    print(f"{name:<9} one tenant / twenty tenants: {result['ratio_one_over_twenty']}")
    return result


def main() -> None:
    # Every client holds a connection, and so do the chainer and this thread.
    setup_django(DB_POOL_MAX_SIZE=str(CLIENTS + 4))
    from agentplatform.core import rls
    from agentplatform.core.audit import audit_chain, audit_verify
    from agentplatform.devtools.testing import Server

    facts = machine()
    print(f"CPU: {facts['cpu']} ({facts['cpus']} CPUs; {' '.join(facts['cpu_flags'])})")
    tenants = _tenants(CLIENTS)
    one = [tenants[0]] * CLIENTS  # every client a session of the same tenant
    many = tenants  # one client per tenant
    unlimited = {"API_THROTTLE_RATE": "1000000/min"}
    server = Server({"SCRIPTED_LLM_DELAY": "0", **unlimited}, workers=2)
    chainer = Chainer()
    chainer.start()
    try:
        results: dict[str, Any] = {
            "clients": CLIENTS,
            "services": _compare("services", _services, one, many),
            "rest": _compare("rest", lambda each: _rest(server.url, each), one, many),
        }
    finally:
        chainer.stopping.set()
        chainer.join()
        server.stop()
    started = time.perf_counter()
    with rls.cross_tenant(rls.CrossTenantReason.AUDIT_CHAINING, "bench"):
        left = audit_chain()
    tail = time.perf_counter() - started
    linked, seconds = chainer.linked + left, chainer.seconds + tail
    breaks = [found for _, found in audit_verify() if found is not None]
    results["chainer"] = {
        "interval_s": CHAIN_INTERVAL,
        "events_linked": linked,
        "seconds": round(seconds, 3),
        "events_per_s": round(linked / seconds, 1) if seconds else None,
        "chains_verify": not breaks,
    }
    rate = results["chainer"]["events_per_s"]
    print(f"chainer: {linked} events linked in {seconds:.2f} s ({rate} events/s); "
          f"chains verify: {not breaks}")  # fmt: skip
    worst = min(results["services"]["ratio_one_over_twenty"],
                results["rest"]["ratio_one_over_twenty"])  # fmt: skip
    failed = sum(results[path][label]["failed_clients"] for path in ("services", "rest")
                 for label in ("one_tenant", "twenty_tenants"))  # fmt: skip
    met = worst >= GOAL and failed == 0
    results["goal"] = {
        "goal": "20 sessions of one tenant within 10% of 20 sessions over 20 tenants",
        "measured": worst,
        "target": f">= {GOAL}",
        "failed_clients": failed,
        "met": met,
    }
    print(f"goal 4 (issue 16): one tenant / twenty tenants {worst} (target >= {GOAL}; "
          f"failed clients: {failed}) {'met' if met else 'NOT MET'}")  # fmt: skip
    save("tenancy", results)
    for tenant, _, _ in tenants:
        tenant.delete()


if __name__ == "__main__":
    main()
