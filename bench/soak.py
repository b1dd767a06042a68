"""Soak: 200 websocket clients for 10 minutes at a steady rate against one uvicorn process.

Each client sends a message every INTERVAL seconds (jittered) and waits for the reply; every
minute the bench records the errors, the p99 reply latency, the server's RSS and Redis's
used memory. Flat RSS after warm-up and bounded Redis memory (every key has a TTL) are
what it checks. Prints and saves bench/results/soak.json and soak.png.
SOAK_SECONDS shortens the run (e.g. 60 for a smoke run).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, save, setup_django

CLIENTS = 200
INTERVAL = 8.0  # seconds between one client's messages: 25 messages/s in all
DURATION = float(os.environ.get("SOAK_SECONDS", "600"))
# Messages of an ordinary chat's length (~25 and ~40 tokens), so each session's working
# memory reaches its token budget within the first minutes, as real conversations do.
USER_TEXT = "Could you check where my order is and whether it can still arrive before Friday?"
REPLY_TEXT = (
    "Your order left the warehouse this morning and is with the courier now. It should "
    "arrive on Thursday; I will tell you if anything changes before then."
)


class Minute:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0


async def _client(url: str, headers: dict[str, str], minutes: list[Minute], start: float) -> None:
    from websockets.asyncio.client import connect

    await asyncio.sleep(random.uniform(0, INTERVAL))
    async with connect(url, additional_headers=headers, open_timeout=60) as socket:
        while time.monotonic() - start < DURATION:
            minute = minutes[min(len(minutes) - 1, int((time.monotonic() - start) // 60))]
            client_id = uuid.uuid4().hex
            sent = time.monotonic()
            message = {"type": "message", "content": USER_TEXT, "client_message_id": client_id}
            try:
                await socket.send(json.dumps(message))
                while True:
                    frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=60))
                    if frame.get("client_message_id") != client_id:
                        continue
                    if frame["type"] == "error":
                        minute.errors += 1
                        break
                    if frame["type"] == "message" and frame["message"]["role"] == "assistant":
                        minute.latencies.append(time.monotonic() - sent)
                        break
            except Exception:
                minute.errors += 1
                return
            await asyncio.sleep(max(0.0, INTERVAL - (time.monotonic() - sent)))


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_by_family(redis: Any) -> dict[str, float]:
    """Redis memory (MB) per key family: `<prefix>:{<hash tag>}:<family>:...`, or the whole
    name for the Celery broker's lists, which carry no prefix."""
    families: dict[str, int] = {}
    for name in redis.scan_iter(count=1000):
        parts = name.decode().split(":")
        tagged = len(parts) > 3 and parts[1].startswith("{")
        family = parts[3] if tagged else parts[1] if len(parts) > 2 else parts[0]
        families[family] = families.get(family, 0) + (redis.memory_usage(name) or 0)
    return {family: round(size / 1e6, 2) for family, size in sorted(families.items())}


async def _sample(
    pid: int, redis: Any, samples: list[dict[str, Any]], start: float, minutes: list[Minute]
) -> None:
    cpu_before = _cpu_seconds(pid)
    while time.monotonic() - start < DURATION:
        await asyncio.sleep(min(60.0, DURATION / 10))
        at = time.monotonic() - start
        cpu_now = _cpu_seconds(pid)
        replies = len(minutes[min(len(minutes) - 1, max(0, int(at // 60) - 1))].latencies)
        info = redis.info("memory")
        samples.append(
            {
                "at_s": round(at),
                "server_rss_mb": round(_rss_kb(pid) / 1024, 1),
                # CPU the server spent per reply in the last interval: flat means a turn
                # costs the same at minute 10 as at minute 1.
                "server_cpu_ms_per_reply": round(
                    (cpu_now - cpu_before) * 1000 / max(1, replies), 2
                ),
                "redis_used_mb": round(info["used_memory"] / 1e6, 2),
                "redis_keys": redis.dbsize(),
                "redis_mb_by_family": _redis_by_family(redis),
            }
        )
        cpu_before = cpu_now


async def _soak(url: str, key: str, sessions: list[Any], pid: int, redis: Any) -> Any:
    start = time.monotonic()
    minutes = [Minute() for _ in range(int(DURATION // 60) + 1)]
    samples: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {key}"}
    clients = [_client(f"{url}/ws/sessions/{s.pk}/", headers, minutes, start) for s in sessions]
    await asyncio.gather(
        _sample(pid, redis, samples, start, minutes), *clients, return_exceptions=True
    )
    return minutes, samples


def main() -> None:
    setup_django()
    import redis as redis_lib
    from django.conf import settings

    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create
    from agentplatform.devtools.testing import Server, Worker
    from agents.services import agent_create, session_open

    tenant, key = tenant_create(actor=SYSTEM, slug=f"soak-{uuid.uuid4().hex[:8]}")
    agent = agent_create(actor=SYSTEM, tenant=tenant, name="soak", system_prompt="Be brief.")
    sessions = [
        session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"u{i}")
        for i in range(CLIENTS)
    ]
    # Production's shape: the web process and a Celery worker (memory extraction, compaction).
    env = {
        "SCRIPTED_LLM_DELAY": "0",
        "SCRIPTED_LLM_REPLY": REPLY_TEXT,
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    server = Server({**env, "DB_POOL_MAX_SIZE": "40", "MALLOC_ARENA_MAX": "2"})
    worker = Worker(env, concurrency=1)
    redis = redis_lib.Redis.from_url(settings.REDIS_URL)
    try:
        minutes, samples = asyncio.run(
            _soak(server.url.replace("http://", "ws://"), key, sessions, server.process.pid, redis)
        )
    finally:
        server.stop()
        worker.stop()
        tenant.delete()
    per_minute = [
        {
            "minute": index + 1,
            "replies": len(m.latencies),
            "errors": m.errors,
            "p50_ms": round(percentile(m.latencies, 50) * 1000, 1) if m.latencies else None,
            "p99_ms": round(percentile(m.latencies, 99) * 1000, 1) if m.latencies else None,
        }
        for index, m in enumerate(minutes)
        if m.latencies or m.errors
    ]
    result = {
        "clients": CLIENTS,
        "interval_s": INTERVAL,
        "duration_s": DURATION,
        "replies": sum(m["replies"] for m in per_minute),
        "errors": sum(m["errors"] for m in per_minute),
        "per_minute": per_minute,
        "samples": samples,
    }
    print(json.dumps(result, indent=1))
    path = save("soak", result)
    _plot(per_minute, samples, path.with_suffix(".png"))


def _plot(per_minute: list[dict[str, Any]], samples: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, cpu, memory) = plt.subplots(1, 3, figsize=(15, 4))
    latency.plot([m["minute"] for m in per_minute], [m["p99_ms"] for m in per_minute], marker=".")
    latency.set_xlabel("minute")
    latency.set_ylabel("reply p99 (ms)")
    latency.set_title(f"{CLIENTS} websockets, one message per {INTERVAL:.0f} s each")
    times = [s["at_s"] / 60 for s in samples]
    cpu.plot(times, [s["server_cpu_ms_per_reply"] for s in samples], marker=".")
    cpu.set_xlabel("minute")
    cpu.set_ylabel("server CPU per reply (ms)")
    cpu.set_ylim(bottom=0)
    cpu.set_title("Cost of a turn over the run")
    memory.plot(times, [s["server_rss_mb"] for s in samples], marker=".", label="server RSS (MB)")
    memory.plot(times, [s["redis_used_mb"] for s in samples], marker=".", label="Redis used (MB)")
    memory.set_xlabel("minute")
    memory.legend()
    memory.set_title("Memory over the run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
