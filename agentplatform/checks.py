"""System checks of the platform (`manage.py check --database default`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import connections

from agentplatform import rls


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
