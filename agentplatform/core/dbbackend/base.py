"""The PostgreSQL backend with row-level security scoping (see agentplatform.core.rls).

Before any statement runs, the connection is brought to the scope of the code running it, with
one `set_config` call when the scope differs from the one the connection has, sent in the same
round trip as the statement (psycopg's pipeline mode). What the connection has is forgotten
whenever PostgreSQL may have undone it: on every rollback (a rolled-back transaction takes its
SET commands with it), and on checkout from the pool. The pool's check on checkout makes no
round trip unless the connection's socket says PostgreSQL ended it, so a request's first
statement costs one round trip, not two.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from contextlib import nullcontext
from time import monotonic
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg import Connection, OperationalError, ServerCursor
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from agentplatform.core import rls

# A connection idle in the pool for longer than this is checked with a round trip: a peer
# gone without a word (a failover that moved an address, a NAT or load balancer dropping an
# idle flow) leaves nothing on the socket to see. Busy connections come back within
# milliseconds and skip it.
CHECK_AFTER_IDLE_SECONDS = 5.0
# Only these share a round trip with the scope's setting: a pipeline is one implicit
# transaction, which CREATE DATABASE, VACUUM, CREATE INDEX CONCURRENTLY and several
# statements in one string cannot run in.
_PIPELINED = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


def check_alive(connection: Connection[Any]) -> None:
    """The pool's check of a connection on checkout: raises when it is broken, so that the
    pool takes another.

    A connection PostgreSQL ended (a restart, pg_terminate_backend, a crashed backend) has
    its socket readable: the server's last error message, or the end of the stream. Only
    then, or after the connection sat idle past CHECK_AFTER_IDLE_SECONDS, is the empty
    query of psycopg_pool's `check_connection` sent, to fail on a dead connection. A
    connection in use passes without a round trip, which cost every REST request and
    websocket message one more statement than the work needed. A peer that vanished within
    the idle window fails the request's statement instead (once: the pool then drops that
    connection); TCP keepalives in DATABASE_URL (`keepalives_idle`, `tcp_user_timeout`)
    make the kernel report it on the socket sooner.
    """
    if connection.closed or connection.broken:
        raise OperationalError("the connection is closed")
    idle_since = getattr(connection, "_agentplatform_idle_since", None)
    idle_long = idle_since is not None and monotonic() - idle_since > CHECK_AFTER_IDLE_SECONDS
    if idle_long or _readable(connection):
        ConnectionPool.check_connection(connection)


def _readable(connection: Connection[Any]) -> bool:
    poller = select.poll()
    poller.register(connection.pgconn.socket, select.POLLIN)
    return bool(poller.poll(0))


def mark_idle(connection: Connection[Any]) -> None:
    """The pool's reset callback: when a connection came back (for `check_alive`)."""
    connection._agentplatform_idle_since = monotonic()  # type: ignore[attr-defined]


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rls_scope: rls.Scope | None = None
        self.execute_wrappers.append(self._in_scope)

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        """Django's pool (django/db/backends/postgresql/base.py, 5.2), whose health check is
        `check_alive` instead of an empty query."""
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        pools: dict[str, ConnectionPool[Any]] = self._connection_pools  # type: ignore[attr-defined]
        if self.alias not in pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # as Django's; it sets autocommit itself later
            pool = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,
                configure=self._configure_connection,  # type: ignore[attr-defined]
                check=check_alive if self.settings_dict["CONN_HEALTH_CHECKS"] else None,
                reset=mark_idle,
                **({} if pool_options is True else pool_options),
            )
            pools.setdefault(self.alias, pool)  # a racing thread's pool may win: as Django's
        return pools[self.alias]

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        self.rls_scope = None  # whatever its last user left: set again before a statement
        return connection

    def _commit(self) -> None:
        # A COMMIT of a failed transaction is a ROLLBACK (PostgreSQL says so without an
        # error): a setting made in the transaction is gone with it.
        failed = self._transaction_failed()
        try:
            super()._commit()  # type: ignore[misc]  # private, absent from the stubs
        finally:
            if failed:
                self.rls_scope = None

    def _transaction_failed(self) -> bool:
        raw = self.connection
        return raw is not None and raw.info.transaction_status == TransactionStatus.INERROR

    def _rollback(self) -> None:
        super()._rollback()  # type: ignore[misc]  # private, absent from the stubs
        self.rls_scope = None

    def _savepoint_rollback(self, sid: str) -> None:
        super()._savepoint_rollback(sid)  # type: ignore[misc]
        self.rls_scope = None  # after: the rollback statement itself passes _in_scope

    def scope_set_by_statement(self, scope: rls.Scope | None) -> None:
        """Record that a statement just run here changed the connection's scope itself
        (None: to something unknown), so the next statement is brought to its own."""
        self.rls_scope = scope

    def _in_scope(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        scope = rls.current()
        if scope == self.rls_scope or self._transaction_failed():
            # In a failed transaction nothing reads a row, and every way out is a rollback,
            # which forgets the scope: a setting would only fail before, say, the ROLLBACK TO
            # that recovers a savepoint, and take it down with it.
            return execute(sql, params, many, context)
        self.rls_scope = None  # until both have run: a failure may undo the set_config
        # One round trip for both where the statement allows. Before the Sync that ends the
        # pipeline they are one implicit transaction in autocommit: a failing statement
        # takes the setting with it.
        batch = self.connection.pipeline() if self._pipelines(sql, context) else nullcontext()
        with self.wrap_database_errors, batch:
            rls.apply(self.connection, scope)
            result = execute(sql, params, many, context)
        self.rls_scope = scope
        return result

    def _pipelines(self, sql: str, context: dict[str, Any]) -> bool:
        """Whether the setting may share the statement's round trip: for the statements
        of _PIPELINED on pooled connections, not for server-side cursors (psycopg cannot
        declare them in a pipeline)."""
        return (
            self.pool is not None
            and sql.lstrip()[:6].upper().startswith(_PIPELINED)
            and not isinstance(context["cursor"].cursor, ServerCursor)
        )
