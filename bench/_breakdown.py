"""Where a turn's time goes: every SQL statement and Redis round trip, timed and named.

`Breakdown` wraps the thread's Django connection (`execute_wrapper`) and redis-py's
`execute_command` and pipeline `execute` while it is active, and names each call after the
platform function that made it (the nearest frame in agents/, memory/ or agentplatform/,
outside the Redis helpers). What is left of a turn's wall time, minus the scripted LLM's
own time, is Python.

Instrumentation for benchmarks only: it patches redis-py's classes while in use.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_OWN = tuple(str(ROOT / package) for package in ("agents", "memory", "agentplatform"))
# Frames that only carry a call for someone else: the label names their caller.
_CARRIERS = ("infra/redis.py", "dbbackend", "core/rls.py")


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_OWN) and not any(part in filename for part in _CARRIERS):
            module = Path(filename).relative_to(ROOT).with_suffix("").as_posix()
            return f"{module.replace('/', '.')}.{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "elsewhere"


@dataclass
class Breakdown:
    turns: int = 0
    wall: float = 0.0
    llm: float = 0.0
    calls: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))

    def _timed(self, kind: str, label: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.calls[(kind, label)].append(time.perf_counter() - started)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        import redis
        from django.db import connection
        from redis.client import Pipeline

        command, execute = redis.Redis.execute_command, Pipeline.execute
        breakdown = self

        def timed_command(client: Any, *args: Any, **options: Any) -> Any:
            name = f"{_caller()} {args[0]}"
            return breakdown._timed("redis", name, lambda: command(client, *args, **options))

        def timed_pipeline(pipeline: Any, *args: Any, **kwargs: Any) -> Any:
            name = f"{_caller()} pipeline[{len(pipeline.command_stack)}]"
            return breakdown._timed("redis", name, lambda: execute(pipeline, *args, **kwargs))

        def timed_sql(run: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            name = f"{_caller()} {sql.split(None, 1)[0].upper()}"
            return breakdown._timed("sql", name, lambda: run(sql, params, many, context))

        redis.Redis.execute_command = timed_command  # type: ignore[method-assign]
        Pipeline.execute = timed_pipeline  # type: ignore[method-assign]
        try:
            with connection.execute_wrapper(timed_sql):
                yield
        finally:
            redis.Redis.execute_command = command  # type: ignore[method-assign]
            Pipeline.execute = execute  # type: ignore[method-assign]

    def turn(self, run: Callable[[], Any]) -> None:
        """Run one turn (a callable returning a TurnResult) and account for it."""
        started = time.perf_counter()
        result = run()
        self.wall += time.perf_counter() - started
        self.llm += result.llm_seconds
        self.turns += 1

    def rows(self) -> list[dict[str, Any]]:
        """Per turn: each call site's count and mean ms, then the scripted LLM and Python."""
        per_turn = max(self.turns, 1)
        rows = [
            {
                "kind": kind,
                "what": label,
                "calls_per_turn": round(len(times) / per_turn, 2),
                "ms_per_turn": round(sum(times) / per_turn * 1000, 3),
            }
            for (kind, label), times in self.calls.items()
        ]
        rows.sort(key=lambda row: -row["ms_per_turn"])
        io = sum(sum(times) for times in self.calls.values())
        rows.append(
            {"kind": "llm", "what": "scripted LLM (replaced part)", "calls_per_turn": 1.0,
             "ms_per_turn": round(self.llm / per_turn * 1000, 3)}
        )  # fmt: skip
        rows.append(
            {"kind": "python", "what": "Python (the rest of the turn)", "calls_per_turn": 1.0,
             "ms_per_turn": round((self.wall - io - self.llm) / per_turn * 1000, 3)}
        )  # fmt: skip
        total = self.wall / per_turn * 1000
        for row in rows:
            row["share"] = round(row["ms_per_turn"] / total, 3) if total else 0.0
        return rows

    def print_table(self) -> None:
        total = self.wall / max(self.turns, 1) * 1000
        print(f"where a turn's time goes ({self.turns} turns, {total:.2f} ms per turn):")
        print(f"  {'kind':<7}{'calls':>6}{'ms':>8}{'share':>7}  what")
        for row in self.rows():
            print(
                f"  {row['kind']:<7}{row['calls_per_turn']:>6}{row['ms_per_turn']:>8.3f}"
                f"{row['share'] * 100:>6.1f}%  {row['what']}"
            )
