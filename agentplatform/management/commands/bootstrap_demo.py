from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser
from django.db import transaction

from agentplatform.core.audit import command_actor
from agentplatform.core.services import api_key_create, operator_ensure
from agentplatform.management.base import PlatformCommand
from agentplatform.models import Membership, Tenant
from agents.models import Agent
from agents.services import agent_create

COMMAND = command_actor(__name__)

DEMO_SLUG = "demo"
DEMO_PROMPT = "You are a friendly, concise assistant. Answer in one or two sentences."


class Command(PlatformCommand):
    help = (
        "Make sure tenant 'demo' exists with an agent, an admin login and an API key. "
        "The secrets are written once to a 0600 file under the data directory."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--credentials", default=str(_default_credentials_path()))

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["credentials"])
        saved = json.loads(path.read_text()) if path.exists() else {}
        with transaction.atomic():
            credentials = _ensure_demo(saved)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(credentials, indent=2))
        os.chmod(path, 0o600)
        self.stdout.write(json.dumps(credentials))


def _default_credentials_path() -> Path:
    data_dir = os.environ.get("AGENTPLATFORM_DATA_DIR", str(settings.BASE_DIR / ".data"))
    return Path(data_dir) / "demo-credentials.json"


def _ensure_demo(saved: dict[str, Any]) -> dict[str, Any]:
    tenant, _ = Tenant.objects.get_or_create(slug=DEMO_SLUG, defaults={"name": "Demo"})
    agent = Agent.objects.for_tenant(tenant).order_by("created_at").first()
    if agent is None:
        agent = agent_create(
            actor=COMMAND, tenant=tenant, name="Demo assistant", system_prompt=DEMO_PROMPT
        )
    password = saved.get("admin_password") or secrets.token_urlsafe(12)
    user, created = operator_ensure(
        actor=COMMAND,
        tenant=tenant,
        username=saved.get("admin_username", "admin"),
        password=password,
        role=Membership.Role.MANAGER,
        superuser=True,
    )
    if created or "admin_password" not in saved:
        user.set_password(password)
        user.save(update_fields=["password"])
    api_key = saved.get("api_key")
    if not api_key or not _key_is_valid(api_key):
        _, api_key = api_key_create(actor=COMMAND, tenant=tenant, name="demo")
    return {
        "tenant": tenant.slug,
        "agent_id": str(agent.pk),
        "admin_username": user.username,
        "admin_password": password,
        "api_key": api_key,
    }


def _key_is_valid(raw: str) -> bool:
    from agentplatform.core.services import api_key_authenticate

    key = api_key_authenticate(raw)
    return key is not None and key.tenant.slug == DEMO_SLUG
