"""Row-level security: PostgreSQL itself keeps tenants apart.

Application code filters by tenant everywhere (`tenancy.for_tenant`, `access_object`); this
module makes a forgotten filter harmless. Every tenant-owned table has RLS enabled and
*forced*, with one policy: a row is visible (and writable) only when its `tenant_id` is in the
connection's tenant scope. The application connects as a role that is neither superuser nor
BYPASSRLS and owns nothing, so the policy binds it; migrations run as the owner.

The scope lives in a context variable, so it follows a request, a websocket consumer's task, a
thread started with `copy_context()` and a Celery task. The database backend
(`agentplatform.core.dbbackend`) brings each connection to the current scope before any statement
runs, with one `set_config` call whenever the scope differs from what the connection has; a
connection fresh from the pool, or one whose transaction rolled back, counts as unknown.

The default scope is empty: no tenant, so no rows. Work that must see every tenant (the API-key
lookup, a superuser's admin pages, beat sweeps, management commands) goes through one path,
`cross_tenant(reason)`, whose reasons are listed in `CrossTenantReason` and logged. The one
exception is the API-key lookup of every request: the SQL function of migration 0007 sees every
tenant's keys within its own statement, which also moves the connection into the key's tenant
(one round trip instead of three); it is logged with its reason all the same.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model

logger = logging.getLogger("agentplatform.core.rls")

GUC_TENANTS = "app.tenant_ids"
GUC_ALL = "app.all_tenants"
POLICY = "tenant_isolation"


@dataclass(frozen=True)
class Scope:
    """Which tenants' rows a connection may see: a set of tenant ids, or all of them."""

    tenant_ids: frozenset[str] = frozenset()
    all_tenants: bool = False

    def settings(self) -> tuple[str, str]:
        return ",".join(sorted(self.tenant_ids)), "on" if self.all_tenants else "off"


NO_TENANT = Scope()
ALL_TENANTS = Scope(all_tenants=True)
_scope: ContextVar[Scope] = ContextVar("agentplatform_rls_scope", default=NO_TENANT)


class CrossTenantReason(enum.StrEnum):
    """Every reason the platform looks across tenants. Adding one is a reviewed change."""

    CREDENTIAL_LOOKUP = "credential lookup"  # an API key or operator's memberships
    SUPERUSER_CONSOLE = "superuser console"
    MAINTENANCE = "maintenance task"  # beat sweeps: recovery, retention, accounting
    AUDIT_CHAINING = "audit chaining"  # linking every tenant's pending audit events
    TASK_DISPATCH = "task dispatch"  # a task finding the tenant of the row it was given
    COMMAND = "management command"
    TEST_FIXTURES = "test fixtures"


def current() -> Scope:
    return _scope.get()


def tenant_scope_of(*tenant_ids: uuid.UUID | str) -> Scope:
    return Scope(tenant_ids=frozenset(str(tenant_id) for tenant_id in tenant_ids))


@contextmanager
def _scoped(scope: Scope) -> Iterator[None]:
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)


def tenant_scope(*tenant_ids: uuid.UUID | str) -> AbstractContextManager[None]:
    """Run the block with only these tenants' rows visible."""
    return _scoped(tenant_scope_of(*tenant_ids))


# Looked up on every request: logged at DEBUG so the log is not one line per API call.
_ROUTINE = {CrossTenantReason.CREDENTIAL_LOOKUP, CrossTenantReason.TASK_DISPATCH}


def log_crossing(reason: CrossTenantReason, detail: str) -> None:
    level = logging.DEBUG if reason in _ROUTINE else logging.INFO
    logger.log(level, "cross-tenant scope: %s%s", reason.value, f" ({detail})" if detail else "")


def cross_tenant(reason: CrossTenantReason, detail: str = "") -> AbstractContextManager[None]:
    """Run the block with every tenant's rows visible: the one audited way across tenants."""
    log_crossing(reason, detail)
    return _scoped(ALL_TENANTS)


def enter(scope: Scope) -> None:
    """Set the scope for the rest of the current context (a request, a consumer's task),
    whose owner restores the previous one (`request_scope`, the consumer ending)."""
    _scope.set(scope)


def enter_cross_tenant(reason: CrossTenantReason, detail: str = "") -> None:
    """`enter(ALL_TENANTS)`, logged like `cross_tenant`."""
    log_crossing(reason, detail)
    _scope.set(ALL_TENANTS)


def request_scope() -> AbstractContextManager[None]:
    """A request starts with no tenant and leaves nothing behind."""
    return _scoped(NO_TENANT)


# --- the connection side (called by agentplatform.core.dbbackend) ------------------------------


def apply(raw_connection: Any, scope: Scope) -> None:
    """Give a psycopg connection this scope for its session (until the next apply).

    Session-level, not SET LOCAL: the turn path runs single statements in autocommit, where
    a transaction-local setting would end with the statement. A pooled connection's scope
    counts as unknown on every checkout, so nothing carries from one request to the next.
    """
    tenants, everyone = scope.settings()
    raw_connection.execute(
        "SELECT set_config(%s, %s, false), set_config(%s, %s, false)",
        (GUC_TENANTS, tenants, GUC_ALL, everyone),
    )


# --- the schema side (run after migrations, as the owner) ---------------------------------


def protected_tables() -> list[tuple[str, str]]:
    """(table, tenant column) for every table holding tenant data: each model with a foreign
    key to the tenant, and the tenant table itself."""
    from agentplatform.models import Tenant

    tables = [(Tenant._meta.db_table, "id")]
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        field = next(
            (f for f in model._meta.concrete_fields if f.is_relation and f.related_model is Tenant),
            None,
        )
        if field is not None:
            tables.append((model._meta.db_table, field.column))
    return sorted(set(tables))


def _policy_sql(table: str, column: str) -> list[str]:
    # Sub-selects make PostgreSQL read the settings once per statement (an InitPlan), and
    # `= ANY(array)` keeps the tenant column usable by an index.
    visible = (
        f"((SELECT current_setting('{GUC_ALL}', true)) = 'on' OR {column} = ANY ("
        f"(SELECT string_to_array(NULLIF(current_setting('{GUC_TENANTS}', true), ''), ','))"
        "::uuid[]))"
    )
    return [
        f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
        f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY',
        f'DROP POLICY IF EXISTS {POLICY} ON "{table}"',
        f'CREATE POLICY {POLICY} ON "{table}" USING {visible} WITH CHECK {visible}',
    ]


def app_role() -> str | None:
    """The role the application connects as, when it differs from the owner's."""
    role = settings.DATABASE_APP.get("USER") or None
    owner = settings.DATABASE_OWNER.get("USER") or None
    return role if role and owner and role != owner else None


def install(using: str = "default", **_: Any) -> None:
    """Policies on every protected table and the application role's grants. Idempotent; run
    after every `migrate` (a post_migrate receiver), so a new table cannot be missed.

    `flush` sends post_migrate too, as the application's role, which may not alter tables:
    then there is nothing to do (the tables and their policies are unchanged)."""
    if connections[using].settings_dict.get("USER") != settings.DATABASE_OWNER.get("USER"):
        return
    statements: list[str] = []
    for table, column in protected_tables():
        statements += _policy_sql(table, column)
    role = app_role()
    if role is not None:
        quoted = connections[using].ops.quote_name(role)
        statements += [
            f"GRANT USAGE ON SCHEMA public TO {quoted}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
            f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
        ]
    with connections[using].cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


# --- owner connections (migrations, test database set-up) ---------------------------------


def _credentials(connection: BaseDatabaseWrapper) -> dict[str, Any]:
    return {key: connection.settings_dict.get(key) for key in ("USER", "PASSWORD")}


def switch_credentials(connection: BaseDatabaseWrapper, credentials: dict[str, Any]) -> None:
    """Reconnect `connection` with other credentials (same server and database)."""
    connection.close()
    close_pool = getattr(connection, "close_pool", None)
    if close_pool is not None:
        close_pool()
    connection.settings_dict.update(credentials)


@contextmanager
def as_owner(using: str = "default") -> Iterator[None]:
    """Run the block connected as the schema's owner (DATABASE_OWNER_URL)."""
    connection = connections[using]
    before = _credentials(connection)
    owner = {key: settings.DATABASE_OWNER.get(key) for key in before}
    if owner == before:
        yield
        return
    switch_credentials(connection, owner)
    try:
        yield
    finally:
        switch_credentials(connection, before)


def role_bypasses_rls(using: str = "default") -> bool:
    """Whether the connected role escapes the policies (superuser or BYPASSRLS)."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        row = cursor.fetchone()
    return bool(row and row[0])


def tenant_of(model: type[Model], pk: Any) -> str | None:
    """The tenant id of one row, looked up across tenants: how a task given an id finds the
    scope to run in. None when the row is gone (or the id malformed)."""
    field = "id" if model._meta.label == "agentplatform.Tenant" else "tenant_id"
    with cross_tenant(CrossTenantReason.TASK_DISPATCH, model._meta.label):
        try:
            found = model._default_manager.filter(pk=pk).values_list(field, flat=True).first()
        except (ValueError, ValidationError):
            return None
    return None if found is None else str(found)
