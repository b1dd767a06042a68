"""A streaming replica (hot standby) of the embedded PostgreSQL, on a loopback port.

Made the way a production replica is: `pg_basebackup -R -X stream` copies the running
cluster and writes `primary_conninfo`, and `postgres` started on the copy follows the
primary's WAL. The embedded cluster needs nothing more: initdb's defaults stream WAL
(`wal_level = replica`, `max_wal_senders = 10`) and its pg_hba trusts replication
connections from the local socket. Imported by tests only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from agentplatform.devtools.embedded import POSTGRES_OS_USER, postgres_bin_dir
from agentplatform.devtools.testing import free_port, wait_until


def _os_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as the embedded server's user."""
    return POSTGRES_OS_USER if os.geteuid() == 0 else None


def _run_as(user: str | None) -> dict[str, Any]:
    return {"user": user} if user is not None else {}


class StreamingReplica:
    """A hot standby of the cluster at `primary_host` (a socket directory or an address),
    listening on 127.0.0.1:`port`; `stop()` ends it and deletes its files."""

    def __init__(self, *, primary_host: str, primary_port: int, owner: str) -> None:
        self.owner = owner
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="pgreplica-"))  # short: it holds the socket
        self.data = self.home / "data"
        self._user = _os_user()
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self._give_home_to_user()
            self._base_backup(primary_host, primary_port)
            self._start()
        except BaseException:
            self.stop()
            raise

    def _give_home_to_user(self) -> None:
        if self._user is not None:
            shutil.chown(self.home, self._user, self._user)

    def _base_backup(self, host: str, port: int) -> None:
        subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [str(postgres_bin_dir() / "pg_basebackup"), "-D", str(self.data), "-R",
             "-X", "stream", "--no-sync", "-h", host, "-p", str(port), "-U", self.owner],
            check=True, cwd=self.home, capture_output=True, **_run_as(self._user),
        )  # fmt: skip

    def _start(self) -> None:
        log = (self.home / "replica.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
            [str(postgres_bin_dir() / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.home}",
             "-c", "hot_standby=on", "-c", "logging_collector=off"],
            cwd=self.home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            **_run_as(self._user),
        )  # fmt: skip
        log.close()
        wait_until(self._accepts_connections, what="the replica to accept connections", timeout=60)

    def _accepts_connections(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the replica exited: {self.log_tail()}")
        try:
            with self.connect("postgres") as conn:
                return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])  # type: ignore[index]
        except psycopg.OperationalError:
            return False

    def connect(self, dbname: str, user: str | None = None) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, dbname=dbname, user=user or self.owner,
            autocommit=True, connect_timeout=2,
        )  # fmt: skip

    def replayed(self, lsn: str) -> bool:
        """Whether the replica has replayed the primary's WAL up to `lsn`."""
        with self.connect("postgres") as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]).fetchone()
        return bool(row and row[0])

    def pause_replay(self) -> None:
        with self.connect("postgres") as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with self.connect("postgres") as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.home / "replica.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)
