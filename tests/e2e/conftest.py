from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentplatform.devtools.testing import RABBITMQ_BIN, RabbitMQ, Server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"  # screenshots (not committed)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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


@pytest.fixture
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """One RabbitMQ for the session (it boots in seconds), stopped at the end whatever
    happened. tools/ensure-system-tools.sh installs it where apt may be used."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.skip("rabbitmq-server is not installed (make system-tools installs it)")
    broker = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    try:
        broker.wait_ready()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def amqp_url(rabbitmq: RabbitMQ) -> str:
    """A broker URL on a virtual host of the test's own: no queue left by another test."""
    return rabbitmq.vhost_url(f"test-{uuid.uuid4().hex[:12]}")
