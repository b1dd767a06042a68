from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentplatform.testing import Server

SLOW_REPLY = " ".join(f"word{i}" for i in range(80))


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    """Two uvicorn processes sharing the test database and Redis, with a slow scripted
    reply (to be killed mid-stream) and short leases (so a dead holder frees quickly)."""
    env = {
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "SCRIPTED_LLM_DELAY": "0.03",
        "SCRIPTED_LLM_REPLY": SLOW_REPLY,
        "AGENTS_LEASE_SECONDS": "2",
        "IDEMPOTENCY_LOCK_SECONDS": "2",
    }
    first, second = Server(env), Server(env)
    yield first, second
    first.stop()
    second.stop()
