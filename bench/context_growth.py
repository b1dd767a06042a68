"""Compiled-context tokens and per-turn platform time at turns 1..500 of one conversation,
with the memory tiers on (extraction and compaction run inline here, as an eager Celery
would): both flatten once the agent's budget is reached. Saves
bench/results/context_growth.json and .png."""

from __future__ import annotations

import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, setup_django

TURNS, BUDGET = 500, 1024


def main() -> None:
    setup_django(CELERY_TASK_ALWAYS_EAGER="1")
    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create
    from agents.engine.turn import turn_run
    from agents.models import Session
    from agents.services import agent_create, session_open

    tenant, _ = tenant_create(actor=SYSTEM, slug=f"growth-{uuid.uuid4().hex[:8]}")
    agent = agent_create(
        actor=SYSTEM,
        tenant=tenant,
        name="g",
        system_prompt="Be brief.",
        context_token_budget=BUDGET,
    )
    session = session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id="growth")
    session = Session.objects.select_related("agent").get(pk=session.pk)
    tokens, times = [], []
    for index in range(TURNS):
        text = f"Turn {index}: my note number {index} says the parcel {index * 7} is blue."
        result = turn_run(session=session, content=text)
        tokens.append(result.context_tokens)
        times.append(result.platform_seconds * 1000)

    def window(values: list[float], at: int) -> float:
        return round(statistics.median(values[max(0, at - 10) : at + 10]), 3)

    marks = [10, 100, 250, 490]
    results = {
        "budget_tokens": BUDGET,
        "context_tokens": {f"turn_{m}": window(tokens, m) for m in marks},
        "platform_ms": {f"turn_{m}": window(times, m) for m in marks},
        "max_context_tokens": max(tokens),
    }
    print(results)
    path = save("context_growth", results)
    _plot(tokens, times, path.with_suffix(".png"))
    tenant.delete()


def _plot(tokens: list[int], times: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(tokens)
    top.axhline(BUDGET, linestyle="--", color="grey", label="budget")
    top.set_ylabel("context tokens")
    top.legend()
    bottom.plot(times, alpha=0.7)
    bottom.set_ylabel("platform ms / turn")
    bottom.set_xlabel("turn")
    fig.suptitle("Context size and turn cost over one 500-turn conversation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
