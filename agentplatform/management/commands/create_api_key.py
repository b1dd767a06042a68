from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from agentplatform.core.audit import command_actor
from agentplatform.core.services import api_key_create
from agentplatform.management.base import PlatformCommand
from agentplatform.models import Tenant

COMMAND = command_actor(__name__)


class Command(PlatformCommand):
    help = "Create another API key for an existing tenant; the key is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--json", action="store_true", help="Print {tenant, api_key}.")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['slug']!r}.")
        _, raw_key = api_key_create(actor=COMMAND, tenant=tenant, name=options["name"])
        if options["json"]:
            self.stdout.write(json.dumps({"tenant": tenant.slug, "api_key": raw_key}))
            return
        self.stdout.write(f"API key for {tenant.slug} (shown once, store it now): {raw_key}")
