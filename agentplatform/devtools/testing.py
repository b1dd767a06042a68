"""Real server processes on loopback, for end-to-end tests and benchmarks.

Imported only by tests and bench scripts (it needs the dev extra's `requests`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import requests
from django.conf import settings

from agentplatform.devtools.devrun import web_command

ROOT = Path(__file__).resolve().parents[2]  # the checkout


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float = 10) -> None:
    """Poll `condition` until it holds (a state the test waits for, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def current_database_url() -> str:
    """The URL of the database this process uses now (under pytest: test_<name>)."""
    parsed = urlparse(os.environ["DATABASE_URL"])
    return urlunparse(parsed._replace(path="/" + settings.DATABASES["default"]["NAME"]))


class _Process:
    """A child process in its own process group (so a kill reaches its children too), on
    this process's database and Redis, with the scripted LLM."""

    process: subprocess.Popen[bytes]

    def _start(self, command: list[str], env: dict[str, str]) -> None:
        full_env = {
            **os.environ,
            "DATABASE_URL": current_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "AGENTS_LLM_BACKEND": "scripted",
            **env,
        }
        self.process = subprocess.Popen(  # noqa: S603 - our own fixed command
            command, cwd=ROOT, env=full_env, start_new_session=True
        )

    def kill(self) -> None:
        """SIGKILL: no clean-up, as in a crash."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class Server(_Process):
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._start(web_command(self.port), env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("server did not become ready")


class Worker(_Process):
    """A Celery worker process (solo pool) on the same database and Redis as `Server`."""

    def __init__(self, env: dict[str, str], *, concurrency: int | None = None) -> None:
        pool = ["--pool", "solo"] if concurrency is None else ["--concurrency", str(concurrency)]
        self._start(
            [sys.executable, "-m", "celery", "-A", "agentplatform.project.celery", "worker",
             *pool, "--loglevel", "warning", "--without-heartbeat", "--without-gossip",
             "--without-mingle"],
            {"CELERY_TASK_ALWAYS_EAGER": "0", **env},
        )  # fmt: skip


class Beat(_Process):
    """Celery beat with the database scheduler (django-celery-beat), on the same database
    as `Worker`: it reads the schedule from PostgreSQL and sends due tasks to the broker."""

    def __init__(self, env: dict[str, str], *, max_interval: int = 1) -> None:
        self._start(
            [sys.executable, "-m", "celery", "-A", "agentplatform.project.celery", "beat",
             "--loglevel", "warning", "--max-interval", str(max_interval)],
            # Eager here would run the tasks inside beat instead of sending them.
            {"CELERY_TASK_ALWAYS_EAGER": "0", **env},
        )  # fmt: skip
