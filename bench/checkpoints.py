"""Checkpoint cost and storage, against LangGraph's PostgresSaver on the same PostgreSQL.

- write cost p50/p99 per granularity policy: a checkpoint is written by the statement that
  appends the turn's messages, so this times that statement, and the checkpoint's own share
  as the difference to the same statement without one (policy `transitions`, no step change);
- storage bytes (messages + checkpoints) after 100, 500 and 1,000 turns of one session, and
  bytes per turn in each stretch (linear: constant within 10%);
- LangGraph (MessagesState, one node) over the same 1,000-turn conversation: its checkpoint
  write time (put + put_writes) and storage, as ratios.
Saves bench/results/checkpoints.json and .png.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, setup_django, summary_ms

TURNS = 1_000
MARKS = (100, 500, 1_000)
TEXT = "turn {i}: please keep note of order number {i} and the delivery window we discussed"


def _timed_writes(times: list[float]) -> None:
    from agents.engine import turn

    original = turn.messages_append

    def timed(**kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(**kwargs)
        finally:
            times.append(time.perf_counter() - started)

    turn.messages_append = timed  # type: ignore[assignment]


def _ours(tenant: Any, agent_for: Any) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    from agentplatform.core.audit import SYSTEM
    from agents.engine.turn import turn_run
    from agents.models import Session
    from agents.services import session_open

    writes: dict[str, Any] = {}
    times: list[float] = []
    _timed_writes(times)
    for policy in ("every_llm_call", "every_turn", "transitions"):
        times.clear()
        session = session_open(actor=SYSTEM, tenant=tenant, agent=agent_for(policy), user_id=policy)
        session = Session.objects.select_related("agent").get(pk=session.pk)
        for i in range(200):
            turn_run(session=session, content=TEXT.format(i=i))
        writes[policy] = summary_ms(times)
    writes["checkpoint_share_p50_ms"] = round(
        writes["every_turn"]["p50_ms"] - writes["transitions"]["p50_ms"], 3
    )
    times.clear()
    session = session_open(
        actor=SYSTEM, tenant=tenant, agent=agent_for("every_turn"), user_id="growth"
    )
    session = Session.objects.select_related("agent").get(pk=session.pk)
    sizes: dict[str, Any] = {}
    curve: list[int] = []
    for i in range(1, TURNS + 1):
        turn_run(session=session, content=TEXT.format(i=i))
        if i % 50 == 0:
            curve.append(_bytes(session))
        if i in MARKS:
            sizes[str(i)] = _bytes(session)
    return writes, sizes, curve


def _bytes(session: Any) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT coalesce(sum(pg_column_size(m.*)), 0) FROM agents_message m "
            "WHERE session_id = %s) + (SELECT coalesce(sum(pg_column_size(c.*)), 0) "
            "FROM memory_checkpoint c WHERE session_id = %s)",
            [session.pk, session.pk],
        )
        return int(cursor.fetchone()[0])


def _langgraph(url: str) -> tuple[dict[str, Any], dict[str, int]]:
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, MessagesState, StateGraph

    times: list[float] = []

    class TimedSaver(PostgresSaver):
        def put(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().put(*args, **kwargs)
            finally:
                times.append(time.perf_counter() - started)

    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"You said: {state['messages'][-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    thread_id = f"ckpt-{uuid.uuid4().hex[:8]}"
    sizes: dict[str, int] = {}
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row) as conn:
        saver = TimedSaver(conn)
        saver.setup()
        graph = builder.compile(checkpointer=saver)
        for i in range(1, TURNS + 1):
            graph.invoke(
                {"messages": [HumanMessage(TEXT.format(i=i))]},
                {"configurable": {"thread_id": thread_id}},
            )
            if i in MARKS:
                row = conn.execute(
                    "SELECT (SELECT coalesce(sum(pg_column_size(t.*)),0) FROM checkpoints t "
                    "WHERE thread_id = %(t)s) + (SELECT coalesce(sum(pg_column_size(b.*)),0) "
                    "FROM checkpoint_blobs b WHERE thread_id = %(t)s) + (SELECT "
                    "coalesce(sum(pg_column_size(w.*)),0) FROM checkpoint_writes w WHERE "
                    "thread_id = %(t)s) AS n",
                    {"t": thread_id},
                ).fetchone()
                sizes[str(i)] = int(row["n"])
    return summary_ms(times), sizes


def main() -> None:
    setup_django()
    import os

    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create
    from agents.services import agent_create

    tenant, _ = tenant_create(actor=SYSTEM, slug=f"ckpt-{uuid.uuid4().hex[:8]}")
    agents = {
        policy: agent_create(
            actor=SYSTEM,
            tenant=tenant,
            name=policy,
            system_prompt="Be brief.",
            checkpoint_policy=policy,
        )
        for policy in ("every_llm_call", "every_turn", "transitions")
    }
    writes, sizes, curve = _ours(tenant, agents.__getitem__)
    per_turn = {
        "0-100": sizes["100"] / 100,
        "100-500": (sizes["500"] - sizes["100"]) / 400,
        "500-1000": (sizes["1000"] - sizes["500"]) / 500,
    }
    lg_writes, lg_sizes = _langgraph(os.environ["DATABASE_OWNER_URL"])  # it creates its tables
    results = {
        "write_ms": writes,
        "storage_bytes": sizes,
        "bytes_per_turn": {k: round(v, 1) for k, v in per_turn.items()},
        "bytes_per_turn_spread": round(max(per_turn.values()) / min(per_turn.values()) - 1, 3),
        "langgraph": {"put_ms": lg_writes, "storage_bytes": lg_sizes},
        "storage_ratio_langgraph_over_ours_at_500": round(lg_sizes["500"] / sizes["500"], 1),
        "write_p99_ratio_langgraph_over_ours": round(
            lg_writes["p99_ms"] / writes["every_turn"]["p99_ms"], 1
        ),
    }
    print(results)
    path = save("checkpoints", results)
    _plot(curve, path.with_suffix(".png"))
    tenant.delete()


def _plot(curve: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([50 * (i + 1) for i in range(len(curve))], [b / 1024 for b in curve], marker=".")
    ax.set_xlabel("turns")
    ax.set_ylabel("KiB (messages + checkpoints)")
    ax.set_title("Storage of one session grows linearly")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
