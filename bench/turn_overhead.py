"""What the platform adds to a turn, through each transport, against LangGraph, and where its
time goes.

Every comparison runs both sides in the same process, against the same PostgreSQL and Redis,
in alternating rounds (A, B, A, B, ...), and reports medians: on a shared 2-core machine the
load changes from one minute to the next, and two measurements taken minutes apart gave
ratios that differed by 2x. Prints and saves bench/results/turn_overhead.json (+ .png):

- transports: turns/s and platform time per turn (wall time minus the scripted LLM's own
  time) through the turn service, REST on one uvicorn process and websockets on the same
  process, at 1 and 10 concurrent sessions, timed from when every client has its session
  (and its socket) to the last reply: the rate of turns, not of opening sessions;
- one 500-turn conversation against LangGraph's PostgresSaver, advanced in alternating
  blocks, and 20 concurrent conversations (at turn ~200) against AsyncPostgresSaver with
  its `sync` and `exit` durability;
- row-level security: turns with the policies in force vs as the owner, alternating;
- the breakdown: every SQL statement and Redis round trip of a turn, and the Python between;
- the goals of issue 16, each with its measured value and whether it is met.

`--only PART` runs one part and prints it (nothing is saved): `--only transports` while
working on a transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _breakdown import Breakdown
from _common import save, setup_django, summary_ms

ROUNDS = 3
TURNS = 500
BLOCK = 25  # turns per side and block of the 500-turn conversation
CONVERSATIONS = 20
GROWN_TO = 200  # turns each concurrent conversation has before it is measured
MEASURED_TURNS = 10  # per conversation and round
USER_TEXT = "turn {i}: please keep note of order number {i} and the delivery window we discussed"
REPLY = "You said: {}"


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


def _run_threads(target: Callable[[Callable[[], None]], None], count: int) -> float:
    """Run `target` in `count` threads at once; the time from when all of them called the
    `ready` they are given (done setting up: a session opened, a client made) to when the
    last one ended, so that the figure is of turns alone. A thread's failure fails the
    bench (a figure from fewer clients than it says would be wrong)."""
    failures: list[BaseException] = []
    started: list[float] = []
    barrier = threading.Barrier(count, action=lambda: started.append(time.perf_counter()))

    def guarded() -> None:
        try:
            target(barrier.wait)
        except BaseException as error:
            failures.append(error)
            barrier.abort()  # the others stop waiting for this one
            raise

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} of {count} client threads failed") from failures[0]
    return time.perf_counter() - started[0]


def _median_of_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "turns_per_s": round(statistics.median(r["turns_per_s"] for r in rounds), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in rounds), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in rounds), 3),
        "rounds": [r["turns_per_s"] for r in rounds],
    }


# --- transports -------------------------------------------------------------------------------


def _service(tenant: Any, agent: Any, concurrency: int, turns: int) -> dict[str, Any]:
    """`turns` turns on each of `concurrency` new sessions, one thread each, as a request or
    task would run them (in the tenant's row-level security scope)."""
    from django.db import connection

    from agentplatform.core import rls
    from agentplatform.core.audit import SYSTEM
    from agents.engine.turn import turn_run
    from agents.services import session_open

    platform: list[float] = []
    lock = threading.Lock()

    def worker(ready: Callable[[], None]) -> None:
        with rls.tenant_scope(tenant.pk):
            session = session_open(
                actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"u-{uuid.uuid4().hex[:6]}"
            )
            ready()
            times = [
                turn_run(session=session, content=USER_TEXT.format(i=i)).platform_seconds
                for i in range(turns)
            ]
        with lock:
            platform.extend(times)
        connection.close()

    elapsed = _run_threads(worker, concurrency)
    return {**summary_ms(platform), "turns_per_s": round(len(platform) / elapsed, 1)}


def _rest(url: str, agent: Any, key: str, concurrency: int, turns: int) -> dict[str, Any]:
    """Each client on one keep-alive connection of the standard library's http.client: the
    clients share the server's two cores, and `requests` spent ~1 ms of CPU per request
    (measured against http.client, alternating, on the same server), which counted against
    the server's rate and, at one session, added ~1 ms to its p50."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    address = urlsplit(url)
    platform: list[float] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(http: HTTPConnection, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        http.request("POST", path, json.dumps(body), headers)
        response = http.getresponse()
        return response.status, json.loads(response.read())

    def worker(ready: Callable[[], None]) -> None:
        http = HTTPConnection(address.hostname or "127.0.0.1", address.port)
        status, session = post(
            http, "/api/v1/sessions/", {"agent": str(agent.pk), "user_id": "rest"}
        )
        assert status == 201, session
        ready()
        times: list[float] = []
        for i in range(turns):
            started = time.perf_counter()
            status, reply = post(
                http,
                f"/api/v1/sessions/{session['id']}/messages/",
                {"content": USER_TEXT.format(i=i)},
            )
            wall = time.perf_counter() - started
            assert status == 201, reply
            times.append(wall - reply["timings"]["llm_ms"] / 1000)
        http.close()
        with lock:
            platform.extend(times)

    elapsed = _run_threads(worker, concurrency)
    return {**summary_ms(platform), "turns_per_s": round(len(platform) / elapsed, 1)}


def _websocket(url: str, sessions: list[Any], key: str, turns: int) -> dict[str, Any]:
    """One socket per session, each sending `turns` messages one after another (the next
    when the assistant's reply arrived), once every socket is open. Wall time per message,
    reply included."""
    from websockets.asyncio.client import ClientConnection, connect

    walls: list[float] = []

    async def talk(ws: ClientConnection) -> None:
        for i in range(turns):
            client_id = uuid.uuid4().hex
            started = time.perf_counter()
            frame = {"type": "message", "content": USER_TEXT.format(i=i)}
            await ws.send(json.dumps({**frame, "client_message_id": client_id}))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
                if reply.get("client_message_id") != client_id:
                    continue
                if reply["type"] == "error":
                    raise RuntimeError(f"websocket turn failed: {reply}")
                if reply["type"] == "message" and reply["message"]["role"] == "assistant":
                    break
            walls.append(time.perf_counter() - started)

    async def run_all() -> float:
        headers = {"Authorization": f"Bearer {key}"}
        sockets = [
            await connect(f"{url}/ws/sessions/{session.pk}/", additional_headers=headers)
            for session in sessions
        ]
        try:
            started = time.perf_counter()
            await asyncio.gather(*(talk(ws) for ws in sockets))
            return time.perf_counter() - started
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))

    elapsed = asyncio.run(run_all())
    return {**summary_ms(walls), "turns_per_s": round(len(walls) / elapsed, 1)}


def _transports(tenant: Any, agent: Any, key: str) -> dict[str, Any]:
    from agentplatform.core.audit import SYSTEM
    from agentplatform.devtools.testing import Server
    from agents.services import session_open

    # The rate limits (per tenant, per socket) would refuse turns long before the server is
    # saturated: this measures the server.
    unlimited = {"API_THROTTLE_RATE": "1000000/min", "AGENTS_WS_RATE_MESSAGES": "1000000"}
    server = Server({"SCRIPTED_LLM_DELAY": "0", **unlimited})
    ws_url = server.url.replace("http://", "ws://")
    plan = {1: 40, 10: 20}  # concurrency: turns per session and round
    rounds: dict[str, list[dict[str, Any]]] = {}
    try:
        for _ in range(ROUNDS):
            for concurrency, turns in plan.items():
                sessions = [
                    session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"ws{n}")
                    for n in range(concurrency)
                ]
                measured = {
                    "service": _service(tenant, agent, concurrency, turns),
                    "rest": _rest(server.url, agent, key, concurrency, turns),
                    "websocket": _websocket(ws_url, sessions, key, turns),
                }
                for transport, result in measured.items():
                    rounds.setdefault(f"{transport}_c{concurrency}", []).append(result)
    finally:
        server.stop()
    results = {name: _median_of_rounds(each) for name, each in rounds.items()}
    for name, result in results.items():
        print(f"{name:<13} {result}")
    ratio = results["websocket_c10"]["turns_per_s"] / results["service_c10"]["turns_per_s"]
    print(f"websocket messages/s / service turns/s at 10 sessions: {ratio:.2f}")
    return results


# --- against LangGraph ------------------------------------------------------------------------


def _chat_graph() -> Any:
    """The idiomatic LangGraph chat graph: MessagesState (add_messages) and one node that
    appends the same scripted reply our turns get."""
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(REPLY.format(state["messages"][-1].content))]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder


def _one_conversation(tenant: Any, agent: Any, owner_url: str) -> dict[str, Any]:
    """One 500-turn conversation each, advanced BLOCK turns at a time, alternating sides."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.postgres import PostgresSaver

    from agentplatform.core import rls
    from agentplatform.core.audit import SYSTEM
    from agents.engine.turn import turn_run
    from agents.services import session_open

    ours: list[float] = []
    theirs: list[float] = []
    thread = {"configurable": {"thread_id": f"bench-{uuid.uuid4().hex[:8]}"}}
    with PostgresSaver.from_conn_string(owner_url) as saver, rls.tenant_scope(tenant.pk):
        saver.setup()
        graph = _chat_graph().compile(checkpointer=saver)
        session = session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id="growth")
        for block in range(0, TURNS, BLOCK):
            for i in range(block, block + BLOCK):
                started = time.perf_counter()
                turn_run(session=session, content=USER_TEXT.format(i=i))
                ours.append(time.perf_counter() - started)
            for i in range(block, block + BLOCK):
                started = time.perf_counter()
                graph.invoke({"messages": [HumanMessage(USER_TEXT.format(i=i))]}, thread)
                theirs.append(time.perf_counter() - started)
        storage = _langgraph_storage(saver, thread["configurable"]["thread_id"])
    result = {
        "turns": TURNS,
        "ours_turns_per_s": round(TURNS / sum(ours), 1),
        "langgraph_turns_per_s": round(TURNS / sum(theirs), 1),
        "speedup": round(sum(theirs) / sum(ours), 1),
        "ours_turn_1_ms": round(statistics.median(ours[:10]) * 1000, 3),
        "ours_turn_500_ms": round(statistics.median(ours[-10:]) * 1000, 3),
        "langgraph_turn_1_ms": round(statistics.median(theirs[:10]) * 1000, 3),
        "langgraph_turn_500_ms": round(statistics.median(theirs[-10:]) * 1000, 3),
        "ours_storage": _our_storage(session),
        "langgraph_storage": storage,
    }
    result["storage_ratio_langgraph_over_ours"] = round(
        storage["postgres_bytes"] / max(1, result["ours_storage"]["postgres_bytes"]), 1
    )
    print(f"one conversation: { ({k: v for k, v in result.items() if 'storage' not in k}) }")
    _plot(ours, theirs, Path(__file__).resolve().parent / "results" / "turn_overhead.png")
    return result


def _ours_concurrent(tenant: Any, sessions: list[Any], turns: int, offset: int) -> float:
    """Turns/s of `turns` turns on each session, one thread per session."""
    from django.db import connection

    from agentplatform.core import rls
    from agents.engine.turn import turn_run

    pending = list(sessions)
    lock = threading.Lock()

    def worker(ready: Callable[[], None]) -> None:
        with lock:
            session = pending.pop()
        ready()
        with rls.tenant_scope(tenant.pk):
            for i in range(offset, offset + turns):
                turn_run(session=session, content=USER_TEXT.format(i=i))
        connection.close()

    return len(sessions) * turns / _run_threads(worker, len(sessions))


async def _theirs_concurrent(
    graph: Any, threads: list[str], turns: int, offset: int, durability: str
) -> float:
    from langchain_core.messages import HumanMessage

    async def conversation(thread_id: str) -> None:
        config = {"configurable": {"thread_id": thread_id}}
        for i in range(offset, offset + turns):
            message = {"messages": [HumanMessage(USER_TEXT.format(i=i))]}
            await graph.ainvoke(message, config, durability=durability)

    started = time.perf_counter()
    await asyncio.gather(*(conversation(thread_id) for thread_id in threads))
    return len(threads) * turns / (time.perf_counter() - started)


def _concurrent_conversations(tenant: Any, agent: Any, owner_url: str) -> dict[str, Any]:
    """20 conversations each, grown to GROWN_TO turns, then measured in alternating rounds:
    ours (20 threads of one process), theirs with `sync` and with `exit` durability."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    from agentplatform.core.audit import SYSTEM
    from agents.services import session_open

    sessions = [
        session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"c{n}")
        for n in range(CONVERSATIONS)
    ]
    threads = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(CONVERSATIONS)]
    rounds: dict[str, list[float]] = {"ours": [], "langgraph_sync": [], "langgraph_exit": []}

    async def langgraph_side(turns: int, offset: int, durability: str) -> float:
        connection = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        async with AsyncConnectionPool(
            owner_url, max_size=CONVERSATIONS, kwargs=connection, open=False
        ) as pool:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            graph = _chat_graph().compile(checkpointer=saver)
            return await _theirs_concurrent(graph, threads, turns, offset, durability)

    print(f"growing {CONVERSATIONS} conversations per side to {GROWN_TO} turns ...")
    _ours_concurrent(tenant, sessions, GROWN_TO, 0)
    asyncio.run(langgraph_side(GROWN_TO, 0, "exit"))
    offset = GROWN_TO
    for _ in range(ROUNDS):
        rounds["ours"].append(_ours_concurrent(tenant, sessions, MEASURED_TURNS, offset))
        for durability in ("sync", "exit"):
            rate = asyncio.run(langgraph_side(MEASURED_TURNS, offset, durability))
            rounds[f"langgraph_{durability}"].append(rate)
        offset += MEASURED_TURNS
    result: dict[str, Any] = {
        "conversations": CONVERSATIONS,
        "from_turn": GROWN_TO,
        **{f"{side}_turns_per_s": round(statistics.median(v), 1) for side, v in rounds.items()},
        "rounds": {side: [round(v, 1) for v in values] for side, values in rounds.items()},
    }
    for durability in ("sync", "exit"):
        result[f"speedup_vs_{durability}"] = round(
            result["ours_turns_per_s"] / result[f"langgraph_{durability}_turns_per_s"], 1
        )
    print(f"{CONVERSATIONS} concurrent conversations: {result}")
    return result


# --- row-level security and the breakdown -----------------------------------------------------


def _rls_cost(
    tenant: Any, agent: Any, turns: int = 10, warmup: int = 12, blocks: int = 24
) -> dict[str, float]:
    """Per-turn platform time with the policies in force (the application's role, in the
    tenant's scope) and bypassed (the owner, a superuser in the embedded set-up), in
    `blocks` alternating blocks on one session each: short blocks, since the machine's speed
    drifts within seconds and the difference sought is a few percent. Switching roles opens
    a new pool: its connections prepare the turn's statements on their fifth use, and
    PostgreSQL plans a prepared statement afresh for its first five executions (planning
    costs more under the policies, which add their conditions to every table), so each
    block's first `warmup` turns are run, not counted: a server's pool stays warm."""
    from agentplatform.core import rls
    from agentplatform.core.audit import SYSTEM
    from agents.engine.turn import turn_run
    from agents.services import session_open

    sides = ("enforced", "bypassed")
    sessions = {
        side: session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"rls-{side}")
        for side in sides
    }
    times: dict[str, list[float]] = {side: [] for side in sides}
    for block in range(blocks):
        for side in sides:
            scope = rls.tenant_scope(tenant.pk) if side == "enforced" else rls.as_owner()
            with scope:
                measured = [
                    turn_run(
                        session=sessions[side],
                        content=USER_TEXT.format(i=block * (warmup + turns) + i),
                    ).platform_seconds
                    for i in range(warmup + turns)
                ]
            times[side] += measured[warmup:]
    result = {f"{side}_p50_ms": round(statistics.median(v) * 1000, 3) for side, v in times.items()}
    result["cost"] = round(result["enforced_p50_ms"] / result["bypassed_p50_ms"] - 1, 3)
    print(f"row-level security: {result}")
    return result


def _breakdown(tenant: Any, agent: Any, turns: int = 200) -> list[dict[str, Any]]:
    from agentplatform.core import rls
    from agentplatform.core.audit import SYSTEM
    from agents.engine.turn import turn_run
    from agents.services import session_open

    breakdown = Breakdown()
    with rls.tenant_scope(tenant.pk):
        session = session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id="breakdown")
        for i in range(20):  # warm: prepared statements, script cache, pools
            turn_run(session=session, content=USER_TEXT.format(i=i))
        with breakdown.active():
            for i in range(20, 20 + turns):
                breakdown.turn(partial(turn_run, session=session, content=USER_TEXT.format(i=i)))
    breakdown.print_table()
    return breakdown.rows()


# --- goals ------------------------------------------------------------------------------------


def _goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    transports = results["transports"]
    service10, rest10 = transports["service_c10"], transports["rest_c10"]
    one, many = results["vs_langgraph"]["one_conversation"], results["vs_langgraph"]["concurrent"]
    measured = [
        ("turn service vs PostgresSaver, one 500-turn conversation", one["speedup"], 10, ">="),
        ("turn service vs AsyncPostgresSaver (sync), 20 conversations", many["speedup_vs_sync"],
         10, ">="),
        ("turn service vs AsyncPostgresSaver (exit), 20 conversations", many["speedup_vs_exit"],
         10, ">="),
        ("REST turns/s / service turns/s, 10 sessions",
         round(rest10["turns_per_s"] / service10["turns_per_s"], 2), 0.6, ">="),
        ("REST p50 / service p50, 1 session",
         round(transports["rest_c1"]["p50_ms"] / transports["service_c1"]["p50_ms"], 2), 2, "<="),
        ("websocket messages/s / service turns/s, 10 sessions",
         round(transports["websocket_c10"]["turns_per_s"] / service10["turns_per_s"], 2), 0.8,
         ">="),
        ("row-level security cost per turn", results["row_level_security"]["cost"], 0.05, "<="),
    ]  # fmt: skip
    goals = [
        {"goal": name, "measured": value, "target": f"{op} {target}",
         "met": value >= target if op == ">=" else value <= target}
        for name, value, target, op in measured
    ]  # fmt: skip
    print("goals (issue 16):")
    for goal in goals:
        mark = "met" if goal["met"] else "NOT MET"
        print(f"  {goal['goal']:<62} {goal['measured']:>7} (target {goal['target']}) {mark}")
    return goals


# --- storage and the chart --------------------------------------------------------------------


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
    ax.plot([t * 1000 for t in ours], label="this platform (whole turn)", alpha=0.9)
    ax.set_xlabel("turn of one conversation")
    ax.set_ylabel("ms per turn")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Per-turn cost as a conversation grows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


PARTS = ("transports", "vs_langgraph", "row_level_security", "breakdown")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="run this part alone and print it (the saved results and the goals need them all)",
    )
    return parser.parse_args()


def _part(name: str, tenant: Any, agent: Any, key: str, owner_url: str) -> Any:
    if name == "transports":
        return _transports(tenant, agent, key)
    if name == "vs_langgraph":
        return {
            "one_conversation": _one_conversation(tenant, agent, owner_url),
            "concurrent": _concurrent_conversations(tenant, agent, owner_url),
        }
    if name == "row_level_security":
        return _rls_cost(tenant, agent)
    return _breakdown(tenant, agent)


def main() -> None:
    arguments = _arguments()
    # One database connection per client thread, and a few for the main thread's own work.
    setup_django(DB_POOL_MAX_SIZE=str(CONVERSATIONS + 4))
    import os

    tenant, agent, key = _tenant_and_agent()
    # LangGraph creates its own tables, so it runs as the owner (without row-level security).
    owner_url = os.environ["DATABASE_OWNER_URL"]
    try:
        if arguments.only:
            # One part alone (while working on it): printed, not saved, so the results file
            # always holds a whole run.
            _part(arguments.only, tenant, agent, key, owner_url)
            return
        results: dict[str, Any] = {
            name: _part(name, tenant, agent, key, owner_url) for name in PARTS
        }
        results["goals"] = _goals(results)
        save("turn_overhead", results)
    finally:
        tenant.delete()


if __name__ == "__main__":
    main()
