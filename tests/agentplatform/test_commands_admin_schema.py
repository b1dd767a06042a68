from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from agentplatform.core.services import api_key_authenticate
from agentplatform.models import ApiKey, Tenant
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _call(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_tenant_prints_a_working_key_once() -> None:
    result = json.loads(_call("create_tenant", "globex", "--name", "Globex", "--json"))
    assert result["tenant"] == "globex"
    key = api_key_authenticate(result["api_key"])
    assert key is not None and key.tenant.name == "Globex"


def test_create_tenant_refuses_a_duplicate_or_bad_slug() -> None:
    _call("create_tenant", "initech")
    with pytest.raises(CommandError, match="already exists"):
        _call("create_tenant", "initech")
    with pytest.raises(CommandError):
        _call("create_tenant", "Not A Slug!")


def test_create_api_key_adds_a_second_key(alice: Persona) -> None:
    result = json.loads(_call("create_api_key", "alice", "--json"))
    assert result["api_key"] != alice.api_key
    assert ApiKey.objects.filter(tenant=alice.tenant).count() == 2
    with pytest.raises(CommandError, match="No tenant"):
        _call("create_api_key", "nobody")


def test_bootstrap_demo_is_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "creds.json"
    first = json.loads(_call("bootstrap_demo", "--credentials", str(target)))
    second = json.loads(_call("bootstrap_demo", "--credentials", str(target)))
    assert first == second
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert api_key_authenticate(first["api_key"]) is not None
    assert User.objects.get(username="admin").check_password(first["admin_password"])
    assert target.stat().st_mode & 0o777 == 0o600


@pytest.fixture
def admin_client(db: None) -> Client:
    User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.login(username="root", password="pw")
    return client


@pytest.mark.parametrize(
    "page",
    [
        "/admin/",
        "/admin/agentplatform/tenant/",
        "/admin/agentplatform/apikey/",
        "/admin/agents/agent/",
        "/admin/agents/session/",
        "/admin/agents/message/",
    ],
)
def test_admin_pages_render(alice: Persona, admin_client: Client, page: str) -> None:
    assert admin_client.get(page).status_code == 200


def test_admin_never_shows_key_secrets_or_hashes(alice: Persona, admin_client: Client) -> None:
    key = ApiKey.objects.get(tenant=alice.tenant)
    page = admin_client.get(f"/admin/agentplatform/apikey/{key.pk}/change/").content.decode()
    assert key.hashed_secret not in page
    assert alice.api_key.split("_", 2)[2] not in page


def test_admin_session_page_shows_messages(alice: Persona, admin_client: Client) -> None:
    page = admin_client.get(f"/admin/agents/session/{alice.session.pk}/change/")
    assert page.status_code == 200


def test_schema_documents_the_api_with_bearer_auth() -> None:
    response = Client().get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/api/v1/agents/" in schema["paths"]
    assert "/api/v1/sessions/{id}/" in schema["paths"]
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def test_swagger_ui_is_served_without_a_cdn() -> None:
    page = Client().get("/api/v1/docs/").content.decode()
    assert "swagger" in page.lower()
    assert "cdn" not in page.lower()


def test_migrations_are_in_sync_with_models() -> None:
    _call("makemigrations", "--check", "--dry-run")
