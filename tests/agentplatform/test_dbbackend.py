"""The database backend's pool check and scoping (agentplatform/core/dbbackend): a pooled
connection is handed out without a round trip unless PostgreSQL ended it, and its first
statement carries the taker's row-level security scope in the same round trip."""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

import psycopg
import pytest
from django.db import DataError, connection, connections, transaction
from psycopg import pq

from agentplatform.core import rls
from agentplatform.core.dbbackend.base import CHECK_AFTER_IDLE_SECONDS, check_alive
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _round_trips(raw: psycopg.Connection[Any], tmp_path: Path, action: Callable[[], Any]) -> int:
    """How many round trips `action` made on `raw`: the messages after which libpq waits
    for the server (Sync, ending an extended-protocol batch; Query, a simple one), read from
    libpq's protocol trace."""
    trace = tmp_path / "trace"
    with trace.open("w") as sink:
        raw.pgconn.trace(sink.fileno())
        raw.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            action()
        finally:
            raw.pgconn.untrace()
    return sum(
        line.startswith("F") and ("\tSync" in line or "\tQuery" in line)
        for line in trace.read_text().splitlines()
    )


def _in_thread(work: Callable[[], Any]) -> Any:
    """Run `work` in a thread of its own, whose Django connection comes from the pool."""
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(work())
        finally:
            connections.close_all()  # back to the pool

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert results, "the thread failed"
    return results[0]


def _settings(cursor: Any) -> tuple[str, str]:
    cursor.execute(
        "SELECT current_setting(%s), current_setting(%s)", [rls.GUC_TENANTS, rls.GUC_ALL]
    )
    return tuple(cursor.fetchone())


def test_a_healthy_pooled_connection_passes_the_check_without_a_round_trip(
    tmp_path: Path,
) -> None:
    pool = connection.pool  # type: ignore[attr-defined]
    raw = pool.getconn()
    try:
        assert _round_trips(raw, tmp_path, lambda: check_alive(raw)) == 0
    finally:
        pool.putconn(raw)


def test_a_connection_postgresql_ended_fails_the_check_and_is_never_handed_out() -> None:
    pool = connection.pool  # type: ignore[attr-defined]
    ended = pool.getconn()
    pid = ended.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    poller = select.poll()
    poller.register(ended.pgconn.socket, select.POLLIN)
    assert poller.poll(5000), "PostgreSQL did not close the ended connection's socket"
    with pytest.raises(psycopg.OperationalError):
        check_alive(ended)
    pool.putconn(ended)

    taken = [pool.getconn() for _ in range(pool.get_stats()["pool_available"] + 1)]
    try:
        for raw in taken:
            assert raw.info.backend_pid != pid
            assert raw.execute("SELECT 1").fetchone() == (1,)
    finally:
        for raw in taken:
            pool.putconn(raw)


def test_the_first_statement_after_checkout_brings_the_scope_in_the_same_round_trip(
    alice: Persona, tmp_path: Path
) -> None:
    def first_statement() -> tuple[tuple[str, str], int]:
        with rls.tenant_scope(alice.tenant.pk):
            connection.ensure_connection()
            with connection.cursor() as cursor:
                seen: list[tuple[str, str]] = []
                round_trips = _round_trips(
                    connection.connection, tmp_path, lambda: seen.append(_settings(cursor))
                )
                return seen[0], round_trips

    settings, round_trips = _in_thread(first_statement)
    assert settings == (str(alice.tenant.pk), "off")
    assert round_trips == 1


def test_after_a_failing_first_statement_the_scope_is_set_again(alice: Persona) -> None:
    """The setting and the statement are one implicit transaction: when the statement fails
    the setting may be undone with it, so the next statement brings its scope again."""

    def failing_then_reading() -> tuple[tuple[str, str], rls.Scope | None]:
        with rls.tenant_scope(alice.tenant.pk), connection.cursor() as cursor:
            with pytest.raises(Exception, match="division by zero"):
                cursor.execute("SELECT 1 / 0")
            after_failure = connection.rls_scope  # type: ignore[attr-defined]
            return _settings(cursor), after_failure

    settings, after_failure = _in_thread(failing_then_reading)
    assert after_failure is None
    assert settings == (str(alice.tenant.pk), "off")


def test_a_connection_idle_past_the_window_is_checked_with_a_round_trip(tmp_path: Path) -> None:
    """A peer gone without a word leaves nothing on the socket: a connection that sat idle
    is asked, one in use is not. The pool stamps each connection it takes back."""
    pool = connection.pool  # type: ignore[attr-defined]
    raw = pool.getconn()
    pool.putconn(raw)
    assert monotonic() - raw._agentplatform_idle_since < CHECK_AFTER_IDLE_SECONDS
    raw = pool.getconn()
    try:
        raw._agentplatform_idle_since = monotonic() - CHECK_AFTER_IDLE_SECONDS - 1
        assert _round_trips(raw, tmp_path, lambda: check_alive(raw)) == 1
        raw._agentplatform_idle_since = monotonic()
        assert _round_trips(raw, tmp_path, lambda: check_alive(raw)) == 0
    finally:
        pool.putconn(raw)


def test_a_failed_statement_in_a_savepoint_leaves_the_transaction_usable(
    alice: Persona, bob: Persona
) -> None:
    """A statement in another scope carries its setting; when it fails, the transaction is
    aborted and the scope unknown, and the ROLLBACK TO that recovers the savepoint must not
    be preceded by a setting (it would fail in the aborted transaction, and take the whole
    transaction down with it)."""

    def savepoint_in_another_scope() -> tuple[str, str]:
        with (
            rls.tenant_scope(alice.tenant.pk),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT 1")
            with pytest.raises(DataError), transaction.atomic(), rls.tenant_scope(bob.tenant.pk):
                cursor.execute("SELECT 1 / 0")
            return _settings(cursor)

    assert _in_thread(savepoint_in_another_scope) == (str(alice.tenant.pk), "off")


def test_statements_that_no_pipeline_may_hold_run_after_a_scope_change(alice: Persona) -> None:
    def vacuum_first() -> bool:
        with rls.tenant_scope(alice.tenant.pk), connection.cursor() as cursor:
            cursor.execute("VACUUM agentplatform_tenant")  # not in a transaction block
            return connection.rls_scope == rls.current()  # type: ignore[attr-defined]

    assert _in_thread(vacuum_first)


def test_a_commit_that_rolled_back_forgets_the_scope(alice: Persona) -> None:
    """PostgreSQL answers COMMIT of a failed transaction with a rollback, which undoes a
    setting made in it."""

    def commit_failed() -> tuple[rls.Scope | None, tuple[str, str]]:
        with rls.tenant_scope(alice.tenant.pk):
            transaction.set_autocommit(False)
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")  # the setting, inside the transaction
                    with pytest.raises(DataError):
                        cursor.execute("SELECT 1 / 0")
                    transaction.commit()
                    after_commit = connection.rls_scope  # type: ignore[attr-defined]
                    return after_commit, _settings(cursor)
            finally:
                transaction.rollback()
                transaction.set_autocommit(True)

    after_commit, settings = _in_thread(commit_failed)
    assert after_commit is None
    assert settings == (str(alice.tenant.pk), "off")
