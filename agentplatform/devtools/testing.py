"""Real server processes on loopback, for end-to-end tests and benchmarks.

Imported only by tests and bench scripts (it needs the dev extra's `requests`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
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
    def __init__(self, env: dict[str, str], *, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._start(web_command(self.port, workers=workers), env)
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

    def __init__(
        self, env: dict[str, str], *, concurrency: int | None = None, logfile: Path | None = None
    ) -> None:
        pool = ["--pool", "solo"] if concurrency is None else ["--concurrency", str(concurrency)]
        # With a log file, at info level: a line per task received and per task finished.
        log = (
            ["--loglevel", "warning"]
            if logfile is None
            else ["--loglevel", "info", "--logfile", str(logfile)]
        )
        self._start(
            [sys.executable, "-m", "celery", "-A", "agentplatform.project.celery", "worker",
             *pool, *log, "--without-heartbeat", "--without-gossip", "--without-mingle",
             # A node name of its own: two workers named alike (celery@<host>) fight over
             # their remote-control queue on RabbitMQ (RESOURCE_LOCKED).
             "--hostname", f"worker-{uuid.uuid4().hex[:8]}@%h"],
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


RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's rabbitmq-server, run as this user


class RabbitMQ:
    """Debian's RabbitMQ as a child process on free loopback ports, with everything of its
    own: data and logs in `base`, node name, Erlang cookie (HOME), configuration (no
    plugins; the machine's /etc/rabbitmq is not read) and port mapper (epmd), so it never
    meets a RabbitMQ that happens to run on the machine. Boots in several seconds."""

    def __init__(self, base: Path) -> None:
        self.port, self.epmd_port = free_port(), free_port()
        base.mkdir(parents=True, exist_ok=True)
        self.env = self._environment(base)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        # Our own port mapper, in the foreground, so stopping it is ours to do (one that
        # the node started would daemonize and outlive it).
        self.epmd = subprocess.Popen(  # noqa: S603 - our own fixed command
            ["/usr/bin/epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self.env, start_new_session=True,
        )  # fmt: skip
        with (base / "stdout.log").open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self.env, cwd=base, start_new_session=True, stdout=log, stderr=log,
            )  # fmt: skip

    def _environment(self, base: Path) -> dict[str, str]:
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": f"ap-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        }

    def wait_ready(self, timeout: float = 90) -> None:
        """Until an AMQP connection opens (the port alone opens before the broker is up)."""
        import amqp  # the AMQP client kombu uses

        def connects() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.process.returncode}")
            try:
                connection = amqp.Connection(f"127.0.0.1:{self.port}", connect_timeout=1)
                connection.connect()
                connection.close()
            except (OSError, amqp.exceptions.AMQPError):
                return False
            return True

        wait_until(connects, what="RabbitMQ to accept AMQP connections", timeout=timeout)

    def ctl(self, *args: str) -> str:
        """rabbitmqctl against this node."""
        return subprocess.run(  # noqa: S603
            [str(RABBITMQ_BIN / "rabbitmqctl"), *args],
            env=self.env, check=True, capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip

    def vhost_url(self, name: str) -> str:
        """A fresh virtual host: queues no other test has touched."""
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        for process in (self.process, self.epmd):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
