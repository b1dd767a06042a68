"""`make run`: embedded services, migrations, the demo tenant, then web + worker + beat.

Ctrl-C (or SIGTERM) stops the children, then the services this process started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agentplatform.devtools import embedded
from agentplatform.project.env import ConfigError, env_int

BASE_DIR = Path(__file__).resolve().parents[2]  # the checkout
PYTHON = sys.executable


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentplatform.project.settings")
    os.environ.setdefault("DEBUG", "1")
    try:  # checked before anything starts
        web_workers = env_int("WEB_CONCURRENCY", 1, minimum=1)
    except ConfigError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 2
    embedded.configure(stop_on_exit=True, quiet=False)
    port = os.environ.get("PORT", "8000")
    _manage("migrate", "--noinput", quiet=True)
    credentials = json.loads(_manage("bootstrap_demo", capture=True).strip().splitlines()[-1])
    children = _start_children(port, web_workers)
    _announce(port, credentials)
    return _supervise(children)


def _manage(*args: str, capture: bool = False, quiet: bool = False) -> str:
    result = subprocess.run(  # noqa: S603
        [PYTHON, str(BASE_DIR / "manage.py"), *args],
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture or quiet else None,
    )
    return result.stdout or ""


def web_command(port: int | str, *, workers: int = 1) -> list[str]:
    """The ASGI server on loopback (also used by the end-to-end tests). With several workers
    uvicorn's supervisor binds the port once and hands the socket to that many processes,
    restarting any that dies; nothing a request needs lives in one process (it is all in
    PostgreSQL and Redis), so any process can serve any request or websocket. `--workers` is
    always given: uvicorn would otherwise read WEB_CONCURRENCY itself, unchecked."""
    return [
        PYTHON, "-m", "uvicorn", "agentplatform.project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--workers", str(workers),
        # Frames go uncompressed unless the deployment asks (see README, Configuration).
        "--ws-per-message-deflate", os.environ.get("UVICORN_WS_PER_MESSAGE_DEFLATE", "false"),
    ]  # fmt: skip


def _start_children(port: str, web_workers: int) -> dict[str, subprocess.Popen[bytes]]:
    commands = {
        "web": web_command(port, workers=web_workers),
        # Its processes: WORKER_CONCURRENCY (settings); its queues: WORKER_QUEUES.
        "worker": [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "agentplatform.project.celery",
            "worker",
            "--loglevel",
            "warning",
        ],
        "beat": [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "agentplatform.project.celery",
            "beat",
            "--loglevel",
            "warning",
            "--schedule",
            str(embedded.DATA_DIR / "celerybeat-schedule"),
        ],
    }
    # Own process groups: Ctrl-C reaches only this supervisor, which stops them in order.
    return {
        name: subprocess.Popen(command, cwd=BASE_DIR, start_new_session=True)  # noqa: S603
        for name, command in commands.items()
    }


def _announce(port: str, credentials: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{port}"
    print(
        f"\n  Agent platform is up.\n"
        f"  API        {base}/api/v1/   (docs: {base}/api/v1/docs/)\n"
        f"  Admin      {base}/admin/    login: {credentials['admin_username']} / "
        f"{credentials['admin_password']}\n"
        f"  Demo key   {credentials['api_key']}\n"
        f"  Demo agent {credentials['agent_id']}\n"
        f"  Try:       curl -H 'Authorization: Bearer {credentials['api_key']}' \\\n"
        f"                  {base}/api/v1/agents/\n"
        f"  Ctrl-C stops everything.\n",
        flush=True,
    )


def _supervise(children: dict[str, subprocess.Popen[bytes]]) -> int:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"{name} exited with {child.returncode}; stopping.", file=sys.stderr)
                stopping, exit_code = True, 1
        time.sleep(0.2)
    _terminate(children)
    embedded.stop_started()
    print("Stopped.", flush=True)
    return exit_code


def _terminate(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
