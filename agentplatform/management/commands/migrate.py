"""`migrate`, run as the schema's owner (DATABASE_OWNER_URL).

The application's own role may not create or alter tables; after the migrations the
post_migrate receiver (agentplatform.core.rls.install) sets the row-level security policies and
grants that role what it needs.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import migrate

from agentplatform.core import rls


class Command(migrate.Command):
    def handle(self, *args: Any, **options: Any) -> None:
        with rls.as_owner(options["database"]):
            super().handle(*args, **options)
