from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from agentplatform.core.audit import command_actor
from agentplatform.core.services import tenant_create
from agentplatform.management.base import PlatformCommand
from agentplatform.models import Tenant

COMMAND = command_actor(__name__)


class Command(PlatformCommand):
    help = "Create a tenant and its first API key; the key is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--json", action="store_true", help="Print {tenant, api_key}.")

    def handle(self, *args: Any, **options: Any) -> None:
        slug: str = options["slug"]
        if Tenant.objects.filter(slug=slug).exists():
            raise CommandError(f"Tenant {slug!r} already exists; use create_api_key.")
        try:
            tenant, raw_key = tenant_create(actor=COMMAND, slug=slug, name=options["name"])
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        if options["json"]:
            self.stdout.write(json.dumps({"tenant": tenant.slug, "api_key": raw_key}))
            return
        self.stdout.write(self.style.SUCCESS(f"Created tenant {tenant.slug}."))
        self.stdout.write(f"API key (shown once, store it now): {raw_key}")
