"""System checks of the platform (`manage.py check --database default`)."""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

from agentplatform.core import rls
from agentplatform.infra import vectorprobe


@register(Tags.database)
def row_level_security_binds(databases: Any = None, **_: Any) -> list[CheckMessage]:
    """Warn when the application's role escapes the tenant policies (superuser, BYPASSRLS):
    then only the application's own filters keep tenants apart."""
    if not databases or "default" not in databases:
        return []
    role = connections["default"].settings_dict.get("USER")
    if role != settings.DATABASE_APP.get("USER"):
        return []  # `migrate` checks while connected as the owner, who may bypass
    if not rls.role_bypasses_rls():
        return []
    return [
        Warning(
            f"The application connects as {role!r}, a superuser or BYPASSRLS role: "
            "PostgreSQL's row-level security does not bind it.",
            hint="Connect as a role that owns nothing and is neither superuser nor BYPASSRLS "
            "(DATABASE_URL), and run migrations as the owner (DATABASE_OWNER_URL).",
            id="agentplatform.W001",
        )
    ]


@register(Tags.database)
def pgvector_runs_on_this_cpu(databases: Any = None, **_: Any) -> list[CheckMessage]:
    """Run pgvector's operations once in a connection of their own: a build that does not
    run on the server's CPU then stops start-up (`migrate`, `check --database default`)
    with one message, instead of crashing every tenant's backends at the first memory
    write. A database without the extension yet is left to `migrate`."""
    if not databases or "default" not in databases:
        return []
    if not _vector_installed():
        return []
    try:
        vectorprobe.probe(_fresh_connection)
    except vectorprobe.VectorProbeFailed as failure:
        return [Error(str(failure), id="agentplatform.E001")]
    return []


def _vector_installed() -> bool:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'vector')")
        row = cursor.fetchone()
    return bool(row and row[0])


def _fresh_connection() -> psycopg.Connection:
    """Not the pooled one: if its backend dies, no request's connection goes with it."""
    params = connections["default"].get_connection_params()
    params.pop("pool", None)
    return psycopg.connect(**params)
