"""The PostgreSQL backend with row-level security scoping (see agentplatform.core.rls).

Before any statement runs, the connection is brought to the scope of the code running it, with
one `set_config` call when the scope differs from the one the connection has. What the
connection has is forgotten whenever PostgreSQL may have undone it: on every rollback (a
rolled-back transaction takes its SET commands with it), and on checkout from the pool, where
it is set afresh: the pool's health check on checkout is that `set_config` call, so a request's
first statement costs one round trip, not two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg import Connection
from psycopg_pool import ConnectionPool

from agentplatform.core import rls


def check_in_scope(connection: Connection[Any]) -> None:
    """The pool's check of a connection on checkout: a round trip that fails on a broken
    connection (the pool then tries another), and gives it the current scope. It runs in
    the thread taking the connection, so `rls.current()` is that code's scope."""
    if connection.autocommit:
        rls.apply(connection, rls.current())
        return
    connection.autocommit = True  # outside a transaction, so the setting is the session's
    try:
        rls.apply(connection, rls.current())
    finally:
        connection.autocommit = False


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rls_scope: rls.Scope | None = None
        self.execute_wrappers.append(self._in_scope)

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        """Django's pool (django/db/backends/postgresql/base.py, 5.2), whose health check is
        `check_in_scope` instead of an empty query."""
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
                check=check_in_scope if self._checks_on_checkout else None,
                **({} if pool_options is True else pool_options),
            )
            pools.setdefault(self.alias, pool)  # a racing thread's pool may win: as Django's
        return pools[self.alias]

    @property
    def _checks_on_checkout(self) -> bool:
        return bool(self.settings_dict["CONN_HEALTH_CHECKS"])

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        # A pooled connection passed `check_in_scope` in this context just now.
        pooled = self.pool is not None and self._checks_on_checkout
        self.rls_scope = rls.current() if pooled else None
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
        if scope != self.rls_scope:
            rls.apply(self.connection, scope)
            self.rls_scope = scope
        return execute(sql, params, many, context)
