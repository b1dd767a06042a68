"""What the platform adds to a turn, and how that compares with LangGraph's PostgresSaver.

Prints and saves bench/results/turn_overhead.json (+ .png):
- platform time per turn (wall time minus the scripted LLM's own time), p50/p99, through the
  turn service directly and through REST on a real uvicorn, at 1, 10 and 50 concurrent sessions;
- per-turn cost at turns 1, 100 and 500 of one conversation (median of 10 turns around each);
- the same 500-turn conversation through a one-node LangGraph graph with PostgresSaver on the
  same PostgreSQL: turns per second, ours / theirs, and storage bytes after 500 turns.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, setup_django, summary_ms

TURNS = 500
USER_TEXT = "turn {i}: please keep note of order number {i} and the delivery window we discussed"


def _tenant_and_agent() -> tuple[Any, Any, str]:
    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create
    from agents.services import agent_create

    tenant, key = tenant_create(actor=SYSTEM, slug=f"bench-{uuid.uuid4().hex[:8]}")
    agent = agent_create(
        actor=SYSTEM,
        tenant=tenant,
        name="bench",
        system_prompt="You are a concise assistant.",
        context_token_budget=2048,
        checkpoint_policy="every_turn",
        double_text_policy="enqueue",
    )
    return tenant, agent, key


def _service_turns(tenant: Any, agent: Any, concurrency: int, turns: int) -> dict[str, Any]:
    from django.db import connection

    from agentplatform.core import rls
    from agentplatform.core.audit import SYSTEM
    from agents.engine.turn import turn_run
    from agents.services import session_open

    platform: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        with rls.tenant_scope(tenant.pk):  # as a request or task would: row-level security on
            session = session_open(
                actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"u-{uuid.uuid4().hex[:6]}"
            )
            times = [
                turn_run(session=session, content=USER_TEXT.format(i=i)).platform_seconds
                for i in range(turns)
            ]
        with lock:
            platform.extend(times)
        connection.close()

    started = time.perf_counter()
    _run_threads(worker, concurrency)
    elapsed = time.perf_counter() - started
    return {**summary_ms(platform), "turns_per_s": round(len(platform) / elapsed, 1)}


def _rest_turns(tenant: Any, agent: Any, key: str, concurrency: int, turns: int) -> dict[str, Any]:
    import requests

    from agentplatform.devtools.testing import Server

    server = Server({"SCRIPTED_LLM_DELAY": "0"})
    platform: list[float] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {key}"}

    def worker() -> None:
        http = requests.Session()
        session_id = http.post(
            f"{server.url}/api/v1/sessions/",
            json={"agent": str(agent.pk), "user_id": "rest"},
            headers=headers,
        ).json()["id"]
        times: list[float] = []
        for i in range(turns):
            started = time.perf_counter()
            response = http.post(
                f"{server.url}/api/v1/sessions/{session_id}/messages/",
                json={"content": USER_TEXT.format(i=i)},
                headers=headers,
            )
            wall = time.perf_counter() - started
            assert response.status_code == 201, response.text
            times.append(wall - response.json()["timings"]["llm_ms"] / 1000)
        with lock:
            platform.extend(times)

    try:
        started = time.perf_counter()
        _run_threads(worker, concurrency)
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    return {**summary_ms(platform), "turns_per_s": round(len(platform) / elapsed, 1)}


def _run_threads(target: Any, count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _growth(tenant: Any, agent: Any) -> tuple[dict[str, Any], list[float], float, Any]:
    from agentplatform.core.audit import SYSTEM
    from agents.engine.turn import turn_run
    from agents.services import session_open

    session = session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id="growth")
    per_turn: list[float] = []
    started = time.perf_counter()
    for i in range(TURNS):
        per_turn.append(turn_run(session=session, content=USER_TEXT.format(i=i)).platform_seconds)
    elapsed = time.perf_counter() - started

    def around(n: int) -> float:
        window = per_turn[max(0, n - 5) : n + 5] if n > 1 else per_turn[:10]
        return round(statistics.median(window) * 1000, 3)

    cost = {"turn_1_ms": around(1), "turn_100_ms": around(100), "turn_500_ms": around(TURNS - 5)}
    cost["ratio_500_over_1"] = round(cost["turn_500_ms"] / cost["turn_1_ms"], 3)
    return cost, per_turn, TURNS / elapsed, session


def _rls_cost(tenant: Any, agent: Any, turns: int = 200) -> dict[str, float]:
    """Per-turn platform time with the policies in force (the application's role, in the
    tenant's scope) and bypassed (the owner, a superuser in the embedded set-up)."""
    from agentplatform.core import rls
    from agentplatform.core.audit import SYSTEM
    from agents.engine.turn import turn_run
    from agents.services import session_open

    def p50(user_id: str) -> float:
        session = session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=user_id)
        times = [
            turn_run(session=session, content=USER_TEXT.format(i=i)).platform_seconds
            for i in range(turns)
        ]
        return round(statistics.median(times) * 1000, 3)

    with rls.tenant_scope(tenant.pk):
        enforced = p50("rls-on")
    with rls.as_owner():
        bypassed = p50("rls-bypassed")
    return {"enforced_p50_ms": enforced, "bypassed_p50_ms": bypassed}


def _our_storage(session: Any) -> dict[str, int]:
    from django.db import connection

    from agentplatform.infra import redis_keys
    from agentplatform.infra.redis import get_redis

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(pg_column_size(m.*)), 0) FROM agents_message m "
            "WHERE session_id = %s",
            [session.pk],
        )
        messages = int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM memory_checkpoint c "
            "WHERE session_id = %s",
            [session.pk],
        )
        checkpoints = int(cursor.fetchone()[0])
    redis_bytes = int(get_redis().memory_usage(redis_keys.working_memory(session.pk)) or 0)
    return {
        "postgres_bytes": messages + checkpoints,
        "messages_bytes": messages,
        "checkpoints_bytes": checkpoints,
        "redis_working_memory_bytes": redis_bytes,
    }


def _langgraph(url: str) -> tuple[float, list[float], dict[str, int]]:
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, MessagesState, StateGraph

    # The idiomatic LangGraph chat graph: MessagesState (add_messages) and one node that
    # appends the same scripted reply our turns get.
    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"You said: {state['messages'][-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    thread = {"configurable": {"thread_id": f"bench-{uuid.uuid4().hex[:8]}"}}
    per_turn: list[float] = []
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        graph = builder.compile(checkpointer=saver)
        started = time.perf_counter()
        for i in range(TURNS):
            turn_started = time.perf_counter()
            graph.invoke({"messages": [HumanMessage(USER_TEXT.format(i=i))]}, thread)
            per_turn.append(time.perf_counter() - turn_started)
        elapsed = time.perf_counter() - started
        storage = _langgraph_storage(saver, thread["configurable"]["thread_id"])
    return TURNS / elapsed, per_turn, storage


def _langgraph_storage(saver: Any, thread_id: str) -> dict[str, int]:
    sizes = {}
    with saver._cursor() as cursor:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            cursor.execute(
                f"SELECT coalesce(sum(pg_column_size(t.*)), 0) AS n FROM {table} t "
                "WHERE thread_id = %s",
                (thread_id,),
            )
            sizes[f"{table}_bytes"] = int(cursor.fetchone()["n"])
    return {"postgres_bytes": sum(sizes.values()), **sizes}


def _plot(ours: list[float], theirs: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([t * 1000 for t in theirs], label="LangGraph PostgresSaver (whole turn)", alpha=0.7)
    ax.plot([t * 1000 for t in ours], label="this platform (platform time per turn)", alpha=0.9)
    ax.set_xlabel("turn of one conversation")
    ax.set_ylabel("ms per turn")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Per-turn cost as a conversation grows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    setup_django()
    import os

    tenant, agent, key = _tenant_and_agent()
    results: dict[str, Any] = {"service": {}, "rest": {}}
    for concurrency, turns in ((1, 100), (10, 30), (50, 10)):
        results["service"][f"c{concurrency}"] = _service_turns(tenant, agent, concurrency, turns)
        results["rest"][f"c{concurrency}"] = _rest_turns(tenant, agent, key, concurrency, turns)
        print(f"c={concurrency:>2} service {results['service'][f'c{concurrency}']}")
        print(f"c={concurrency:>2} rest    {results['rest'][f'c{concurrency}']}")

    from agentplatform.core import rls

    with rls.tenant_scope(tenant.pk):
        cost, ours_per_turn, ours_tps, session = _growth(tenant, agent)
    results["growth"] = cost
    print(f"growth {cost}")
    results["row_level_security"] = _rls_cost(tenant, agent)
    print(f"row-level security {results['row_level_security']}")
    # LangGraph creates its own tables, so it runs as the owner (and without row-level security).
    theirs_tps, theirs_per_turn, theirs_storage = _langgraph(os.environ["DATABASE_OWNER_URL"])
    ours_storage = _our_storage(session)
    ratio = ours_tps / theirs_tps
    results["vs_langgraph"] = {
        "turns": TURNS,
        "ours_turns_per_s": round(ours_tps, 1),
        "langgraph_turns_per_s": round(theirs_tps, 1),
        "speedup": round(ratio, 1),
        "ours_storage": ours_storage,
        "langgraph_storage": theirs_storage,
        "storage_ratio_langgraph_over_ours": round(
            theirs_storage["postgres_bytes"] / max(1, ours_storage["postgres_bytes"]), 1
        ),
        "langgraph_turn_1_ms": round(statistics.median(theirs_per_turn[:10]) * 1000, 3),
        "langgraph_turn_500_ms": round(statistics.median(theirs_per_turn[-10:]) * 1000, 3),
    }
    print(f"turns/s vs LangGraph PostgresSaver: {ratio:.1f}x")
    print(f"storage after {TURNS} turns: ours {ours_storage}, LangGraph {theirs_storage}")
    path = save("turn_overhead", results)
    _plot(ours_per_turn, theirs_per_turn, path.with_suffix(".png"))
    tenant.delete()


if __name__ == "__main__":
    main()
