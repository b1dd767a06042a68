"""Reads that tolerate lag go to a PostgreSQL replica; everything else stays on the primary.

A read goes to the `replica` alias (DATABASE_REPLICA_URL) only inside `reads_may_lag()`, which
the code enters on purpose where a second of lag is harmless: tenant-wide lists, memory
search, the console's pages, the inspector, storage accounting. By default, and always for a
turn, its messages, idempotency records and the lease's fencing, reads stay on the primary,
so a client reading what it has just written never sees an older state. Writes, migrations
and any read inside a transaction on the primary go to the primary too. Without a replica
configured every alias answer is the primary's.

The replica connects with the same backend and role as the primary, so row-level security
holds there exactly as it does on the primary (`set_config` works on a hot standby).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

if TYPE_CHECKING:  # settings import this module's REPLICA: keep its import light
    from django.db.models import Model

REPLICA = "replica"
_PRIMARY_ALIASES = frozenset({DEFAULT_DB_ALIAS, REPLICA})
_lag_tolerated: ContextVar[bool] = ContextVar("agentplatform_reads_may_lag", default=False)


@contextmanager
def _tolerating(lag: bool) -> Iterator[None]:
    token = _lag_tolerated.set(lag)
    try:
        yield
    finally:
        _lag_tolerated.reset(token)


def reads_may_lag() -> AbstractContextManager[None]:
    """Run the block's reads on the replica, when there is one: only for reads whose caller
    accepts not seeing the last moments' writes."""
    return _tolerating(True)


def reads_from_primary() -> AbstractContextManager[None]:
    """Run the block's reads on the primary even inside `reads_may_lag()`: credentials and
    anything deciding access must not lag."""
    return _tolerating(False)


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


def read_alias() -> str:
    """The alias this context's reads use: the replica inside `reads_may_lag()` when one is
    configured and no transaction is open on the primary (whose own writes it must see)."""
    if not _lag_tolerated.get() or not replica_configured():
        return DEFAULT_DB_ALIAS
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    return REPLICA


class ReplicaRouter:
    """The Django database router for the two aliases (settings.DATABASE_ROUTERS)."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        # Explicit even for the primary: otherwise Django reads an instance's relations from
        # the alias the instance came from, and a row loaded from the replica would pull its
        # relations from there outside `reads_may_lag()` too.
        return read_alias()

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        # The replica holds the primary's rows: a row read from one may refer to the other's.
        if {obj1._state.db, obj2._state.db} <= _PRIMARY_ALIASES:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS
