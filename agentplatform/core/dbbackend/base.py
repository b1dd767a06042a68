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
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg import Connection, OperationalError, ServerCursor
from psycopg_pool import ConnectionPool

from agentplatform.core import rls


def check_alive(connection: Connection[Any]) -> None:
    """The pool's check of a connection on checkout: raises when it is broken, so that the
    pool takes another.

    A connection PostgreSQL ended (a restart, pg_terminate_backend, a crashed backend) has
    its socket readable: the server's last error message, or the end of the stream. Only
    then is the empty query of psycopg_pool's `check_connection` sent, to fail. A healthy
    connection passes without a round trip, which cost every REST request and websocket
    message a third of the statements PostgreSQL saw from them. What this cannot see, a
    peer gone without a word (a network cut), the round trip would only have caught by the
    width of a race: the request's statement then fails, and the pool drops the connection.
    """
    if connection.closed or connection.broken:
        raise OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(connection.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        ConnectionPool.check_connection(connection)


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
                **({} if pool_options is True else pool_options),
            )
            pools.setdefault(self.alias, pool)  # a racing thread's pool may win: as Django's
        return pools[self.alias]

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        self.rls_scope = None  # whatever its last user left: set again before a statement
        return connection

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
        if scope == self.rls_scope:
            return execute(sql, params, many, context)
        self.rls_scope = None  # until both have run: a failure may undo the set_config
        if not self._pipelines(context):
            rls.apply(self.connection, scope)
            self.rls_scope = scope
            return execute(sql, params, many, context)
        # One round trip for both. Before the Sync that ends the pipeline they are one
        # implicit transaction in autocommit: a failing statement takes the setting with it.
        with self.wrap_database_errors, self.connection.pipeline():
            rls.apply(self.connection, scope)
            result = execute(sql, params, many, context)
        self.rls_scope = scope
        return result

    def _pipelines(self, context: dict[str, Any]) -> bool:
        """Whether the setting may share the statement's round trip: on pooled connections
        (a connection without the pool runs the test database's CREATE DATABASE and such,
        which no pipeline may hold), not for server-side cursors (psycopg cannot declare
        them in a pipeline)."""
        return self.pool is not None and not isinstance(context["cursor"].cursor, ServerCursor)
