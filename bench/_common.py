"""Shared set-up of the benchmarks: a dedicated database and Redis db, results on disk.

Each bench script is runnable alone (`.venv/bin/python bench/turn_overhead.py`). It uses the
embedded PostgreSQL and Redis of `make run` (or DATABASE_URL / REDIS_URL), but its own
database `agentplatform_bench` and Redis database 13, so development data is untouched.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCH_DB = "agentplatform_bench"
BENCH_REDIS_DB = 13


def setup_django(**env: str) -> None:
    """Start/attach the services, point Django at the bench database, migrate."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentplatform.project.settings")
    os.environ.setdefault("AGENTS_LLM_BACKEND", "scripted")
    os.environ.setdefault("SCRIPTED_LLM_DELAY", "0")
    os.environ.setdefault("REDIS_KEY_PREFIX", "bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.update(env)
    from agentplatform.devtools import embedded

    embedded.configure()
    owner_url = os.environ.get("DATABASE_OWNER_URL") or os.environ["DATABASE_URL"]
    os.environ["DATABASE_OWNER_URL"] = _ensure_database(owner_url, BENCH_DB)
    os.environ["DATABASE_URL"] = _on_database(os.environ["DATABASE_URL"], BENCH_DB)
    redis_url = urlparse(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = urlunparse(redis_url._replace(path=f"/{BENCH_REDIS_DB}"))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from agentplatform.core import rls

    # The bench script's own set-up and reads span tenants, like a management command's;
    # the turns it measures run in their tenant's scope where the code under test sets it.
    rls.enter_cross_tenant(rls.CrossTenantReason.COMMAND, "bench")
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()


def _ensure_database(url: str, name: str) -> str:
    import psycopg

    parsed = urlparse(url)
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not found:
            conn.execute(f'CREATE DATABASE "{name}"')
    return _on_database(url, name)


def _on_database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


def machine() -> dict[str, Any]:
    from agentplatform.infra import cpu

    return {
        "cpu": cpu.model(),
        "cpu_flags": sorted(flag for flag in cpu.DECISIVE_FLAGS if flag in cpu.flags()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    facts = machine()
    path.write_text(json.dumps({"machine": facts, **data}, indent=2))
    print(f"saved {path.relative_to(ROOT)} (CPU: {facts['cpu']}; {' '.join(facts['cpu_flags'])})")
    return path
