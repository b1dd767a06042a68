"""`make run` with WEB_CONCURRENCY=2 (and Celery on RabbitMQ): two ASGI processes share the
port, each serves the API and the chat page on its own (nothing one needs lives in the
other), and Ctrl-C stops every process it started."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings

from agentplatform.devtools.testing import current_database_url, free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    direct = _children(pid)
    return direct + [grandchild for child in direct for grandchild in _descendants(child)]


def _web_processes(devrun: subprocess.Popen[str]) -> list[int]:
    """The uvicorn worker processes: the children of devrun's uvicorn supervisor."""
    supervisors = [pid for pid in _children(devrun.pid) if "uvicorn" in _cmdline(pid)]
    return [
        pid
        for supervisor in supervisors
        for pid in _children(supervisor)
        if "spawn_main" in _cmdline(pid) and "resource_tracker" not in _cmdline(pid)
    ]


@pytest.fixture
def devrun(amqp_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`make run`'s supervisor on the test database and Redis, on a free port."""
    output = tmp_path / "devrun.out"
    env = {
        **os.environ,
        "DATABASE_URL": current_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "CELERY_BROKER_URL": amqp_url,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "PORT": str(free_port()),
        "WEB_CONCURRENCY": "2",
        "WORKER_CONCURRENCY": "1",
    }
    with output.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentplatform.devtools.devrun"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    started = _descendants(process.pid)
    try:
        yield process, output
    finally:
        started += _descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in set(started):  # whatever it failed to stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _announced(output: Path) -> dict[str, str]:
    text = output.read_text()
    return {
        "url": re.search(r"API\s+(http://\S+)/api/v1/", text)[1],  # type: ignore[index]
        "key": re.search(r"Demo key\s+(\S+)", text)[1],  # type: ignore[index]
        "agent": re.search(r"Demo agent\s+(\S+)", text)[1],  # type: ignore[index]
    }


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def _chat_page(base: str, key: str, agent: str) -> requests.Response:
    """A new session, its client token and its chat page: each a new connection, so the
    kernel hands it to whichever server process accepts."""
    auth = {"Authorization": f"Bearer {key}", "Connection": "close"}
    session = requests.post(
        f"{base}/api/v1/sessions/", json={"agent": agent, "user_id": "u1"}, headers=auth, timeout=30
    )
    assert session.status_code == 201, session.text
    session_id = session.json()["id"]
    token = requests.post(
        f"{base}/api/v1/sessions/{session_id}/client-token/", headers=auth, timeout=30
    )
    assert token.status_code in (200, 201), token.text
    return requests.get(
        f"{base}/chat/{session_id}/",
        params={"token": token.json()["token"]},
        headers={"Connection": "close"},
        timeout=30,
    )


def test_make_run_with_two_web_processes_serves_the_chat_page_from_each(
    devrun: tuple[subprocess.Popen[str], Path],
) -> None:
    process, output = devrun
    wait_until(
        lambda: process.poll() is not None or "Ctrl-C stops everything" in output.read_text(),
        what="make run to start",
        timeout=180,
    )
    assert process.poll() is None, output.read_text()
    announced = _announced(output)
    wait_until(lambda: len(_web_processes(process)) == 2, what="two web processes", timeout=60)
    wait_until(lambda: _healthy(announced["url"]), what="the port to answer", timeout=60)
    web = _web_processes(process)
    for serving in web:
        # Only `serving` can accept while the other is stopped: it serves on its own.
        others = [pid for pid in web if pid != serving]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            page = _chat_page(announced["url"], announced["key"], announced["agent"])
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)
        assert page.status_code == 200, page.text
        assert "/ws/sessions/" in page.text

    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(60) == 0, output.read_text()
    assert all(not Path(f"/proc/{pid}").exists() for pid in web)
