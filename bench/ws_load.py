"""Websocket load: 200 sockets, each sending 20 messages (scripted LLM, zero delay), against
one uvicorn process; then the same load on a bare Channels echo consumer of the same server.

Prints and saves bench/results/ws_load.json: messages per second, time to first token
p50/p99 (send -> first `token` frame), errors (must be 0), and the echo baseline.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, setup_django, summary_ms

SOCKETS = 200
MESSAGES = 20


async def _session_client(url: str, headers: dict[str, str], stats: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers=headers, open_timeout=60) as socket:
        for index in range(MESSAGES):
            client_id = uuid.uuid4().hex
            sent = time.perf_counter()
            await socket.send(
                json.dumps(
                    {"type": "message", "content": f"hello {index}", "client_message_id": client_id}
                )
            )
            first_token = None
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), timeout=120))
                if frame.get("client_message_id") != client_id:
                    continue
                if frame["type"] == "token" and first_token is None:
                    first_token = time.perf_counter() - sent
                if frame["type"] == "error":
                    stats["errors"] += 1
                    break
                if frame["type"] == "message" and frame["message"]["role"] == "assistant":
                    break
            if first_token is not None:
                stats["ttft"].append(first_token)
            stats["done"] += 1


async def _echo_client(url: str, stats: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, open_timeout=60) as socket:
        for index in range(MESSAGES):
            sent = time.perf_counter()
            await socket.send(json.dumps({"type": "message", "content": f"hello {index}"}))
            await asyncio.wait_for(socket.recv(), timeout=60)
            stats["ttft"].append(time.perf_counter() - sent)
            stats["done"] += 1


async def _run(clients: list[Any]) -> tuple[float, list[BaseException]]:
    started = time.perf_counter()
    results = await asyncio.gather(*clients, return_exceptions=True)
    return time.perf_counter() - started, [r for r in results if isinstance(r, BaseException)]


def _report(name: str, stats: dict[str, Any], elapsed: float, failures: list) -> dict:
    result = {
        "sockets": SOCKETS,
        "messages_per_socket": MESSAGES,
        "completed": stats["done"],
        "messages_per_s": round(stats["done"] / elapsed, 1),
        "errors": stats["errors"] + len(failures),
        "first_reply_frame": summary_ms(stats["ttft"]),
    }
    print(f"{name}: {result}")
    for failure in failures[:3]:
        print(f"  failure: {failure!r}")
    return result


def main() -> None:
    setup_django()
    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create
    from agentplatform.devtools.testing import Server
    from agents.services import agent_create, session_open

    tenant, key = tenant_create(actor=SYSTEM, slug=f"wsbench-{uuid.uuid4().hex[:8]}")
    agent = agent_create(actor=SYSTEM, tenant=tenant, name="ws", system_prompt="Be brief.")
    sessions = [
        session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=f"u{i}")
        for i in range(SOCKETS)
    ]
    server = Server({"SCRIPTED_LLM_DELAY": "0", "WS_ECHO_ENDPOINT": "1", "DB_POOL_MAX_SIZE": "40"})
    base = server.url.replace("http://", "ws://")
    headers = {"Authorization": f"Bearer {key}"}
    try:
        stats: dict[str, Any] = {"done": 0, "errors": 0, "ttft": []}
        clients = [_session_client(f"{base}/ws/sessions/{s.pk}/", headers, stats) for s in sessions]
        elapsed, failures = asyncio.run(_run(clients))
        platform = _report("session consumer", stats, elapsed, failures)
        echo_stats: dict[str, Any] = {"done": 0, "errors": 0, "ttft": []}
        elapsed, failures = asyncio.run(
            _run([_echo_client(f"{base}/ws/echo/", echo_stats) for _ in range(SOCKETS)])
        )
        echo = _report("bare echo consumer", echo_stats, elapsed, failures)
    finally:
        server.stop()
        tenant.delete()
    ratio = echo["messages_per_s"] / max(platform["messages_per_s"], 0.001)
    print(f"echo messages/s / platform messages/s: {ratio:.1f}x")
    save("ws_load", {"platform": platform, "echo": echo, "echo_over_platform": round(ratio, 1)})


if __name__ == "__main__":
    main()
