"""The base of the platform's management commands."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from agentplatform.core import rls


class PlatformCommand(BaseCommand):
    """A command acts for the administrator running it: across tenants, through the one
    logged cross-tenant path (agentplatform/core/rls.py). Without it, row-level security would
    show a command no rows at all."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        name = type(self).__module__.rsplit(".", 1)[-1]
        with rls.cross_tenant(rls.CrossTenantReason.COMMAND, name):
            return super().execute(*args, **options)
