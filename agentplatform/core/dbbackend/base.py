"""The PostgreSQL backend with row-level security scoping (see agentplatform.core.rls).

Before any statement runs, the connection is brought to the scope of the code running it, with
one `set_config` call when the scope differs from the one the connection has. What the
connection has is forgotten whenever PostgreSQL may have undone it: on checkout from the pool
and on every rollback (a rolled-back transaction takes its SET commands with it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.backends.postgresql import base

from agentplatform.core import rls


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rls_scope: rls.Scope | None = None
        self.execute_wrappers.append(self._in_scope)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        self.rls_scope = None
        return connection

    def _rollback(self) -> None:
        super()._rollback()  # type: ignore[misc]  # private, absent from the stubs
        self.rls_scope = None

    def _savepoint_rollback(self, sid: str) -> None:
        super()._savepoint_rollback(sid)  # type: ignore[misc]
        self.rls_scope = None  # after: the rollback statement itself passes _in_scope

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
