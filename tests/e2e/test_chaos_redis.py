"""Chaos: Redis dies and comes back empty in the middle of a streamed turn. The turn either
completes or fails cleanly (never half-stored); the next turn rebuilds working memory from
PostgreSQL; every acknowledged message is in the history exactly once."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from agentplatform.devtools.embedded import redis_binary
from agentplatform.devtools.testing import Server, free_port
from tests.conftest import Persona

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]
REPLY = " ".join(f"w{i}" for i in range(60))


class OwnRedis:
    """A Redis of this test's own, without persistence: a restart comes back empty."""

    def __init__(self, directory: Path) -> None:
        self.port, self.directory = free_port(), directory
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("Redis did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    yield server
    server.kill()


def test_redis_restarts_mid_turn(alice: Persona, own_redis: OwnRedis) -> None:
    server = Server(
        {
            "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0",
            "SCRIPTED_LLM_DELAY": "0.03",
            "SCRIPTED_LLM_REPLY": REPLY,
            "CELERY_TASK_ALWAYS_EAGER": "1",
        }
    )
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {alice.api_key}"
    turns = f"{server.url}/api/v1/sessions/{alice.session.pk}/messages/"
    acknowledged: list[str] = []
    try:
        for content in ("one", "two"):
            assert http.post(turns, json={"content": content}).status_code == 201
            acknowledged.append(content)

        outcome: dict[str, requests.Response] = {}
        during = threading.Thread(
            target=lambda: outcome.setdefault("r", http.post(turns, json={"content": "three"}))
        )
        during.start()
        time.sleep(0.6)  # mid-stream
        own_redis.kill()
        own_redis.start()  # back, empty: working memory, leases and frames are gone
        during.join(60)
        answer = outcome["r"]
        assert answer.status_code in (201, 409, 503), answer.text  # never a 500
        if answer.status_code == 201:
            acknowledged.append("three")

        after = http.post(turns, json={"content": "four"}, timeout=60)
        assert after.status_code == 201, after.text
        acknowledged.append("four")

        history = http.get(turns, params={"page_size": 100}).json()["results"]
        users = [m["content"] for m in history if m["role"] == "user" and m["status"] == "active"]
        assert users == acknowledged  # each once, in order
        context = http.get(f"{server.url}/api/v1/sessions/{alice.session.pk}/context/").json()
        in_memory = [m["content"] for m in context["working_memory"]["messages"]]
        replies = [m["content"] for m in history if m["status"] == "active"]
        assert in_memory == replies[-len(in_memory) :]  # rebuilt from what PostgreSQL holds
    finally:
        server.stop()
