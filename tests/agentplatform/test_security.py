"""Security basics: deploy checks, headers, the admin login's rate limit, tenants' secrets
encrypted at rest, and the dependency audit."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from agentplatform.core.vault import secret_value
from agents.llm import options_for
from agents.models import Agent
from tests.conftest import Persona

ROOT = Path(__file__).resolve().parents[2]


def test_check_deploy_is_clean_under_production_settings() -> None:
    env = {
        **os.environ,
        "PRODUCTION": "1",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "agents.example.com",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_production_refuses_the_development_secret_key() -> None:
    env = {**os.environ, "PRODUCTION": "1", "DEBUG": "0"}
    env.pop("SECRET_KEY", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "SECRET_KEY must be set" in done.stderr


@pytest.mark.django_db
def test_security_headers_on_api_and_admin(alice: Persona) -> None:
    for response in (alice.client().get("/api/v1/agents/"), Client().get("/admin/login/")):
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert Client().get("/admin/login/")["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_api_requests_skip_the_browser_middleware_and_pages_keep_it(alice: Persona) -> None:
    """The API authenticates by key alone: no session, login or messages for its requests
    (agentplatform/http/middleware.py). The console keeps all of it, CSRF included."""
    api = alice.client()
    api.cookies["sessionid"] = "whatever"
    response = api.get("/api/v1/agents/")
    assert response.status_code == 200
    assert not hasattr(response.wsgi_request, "session")
    assert not hasattr(response.wsgi_request, "_messages")
    assert "Cookie" not in response.get("Vary", "")
    browser = Client(enforce_csrf_checks=True)
    page = browser.get("/admin/login/")
    assert hasattr(page.wsgi_request, "session") and hasattr(page.wsgi_request, "user")
    forged = browser.post("/admin/login/", {"username": "alice-op", "password": "pw-alice"})
    assert forged.status_code == 403  # no CSRF token


@pytest.mark.django_db
def test_admin_login_is_rate_limited_per_address_and_per_username(alice: Persona) -> None:
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(10):
        wrong = client.post("/admin/login/", {"username": "alice-op", "password": "guess"})
        assert wrong.status_code == 200  # the form again, with an error
    blocked = client.post("/admin/login/", {"username": "alice-op", "password": "pw-alice"})
    assert blocked.status_code == 429
    # The username is blocked from another address too; another user from elsewhere is not.
    elsewhere = Client(REMOTE_ADDR="198.51.100.1")
    assert elsewhere.post("/admin/login/", {"username": "alice-op", "password": "pw-alice"}
                          ).status_code == 429  # fmt: skip
    assert elsewhere.post("/admin/login/", {"username": "someone", "password": "x"}
                          ).status_code == 200  # fmt: skip


@pytest.mark.django_db
def test_secrets_are_encrypted_at_rest_and_never_returned(alice: Persona, bob: Persona) -> None:
    value = "sk-live-" + secrets.token_hex(16)
    created = alice.client().post(
        "/api/v1/secrets/", {"name": "openai", "value": value}, format="json"
    )
    assert created.status_code == 201, created.json()
    assert "value" not in created.json()
    listed = alice.client().get("/api/v1/secrets/").json()
    assert [s["name"] for s in listed["results"]] == ["openai"] and value not in json.dumps(listed)
    with connection.cursor() as cursor:
        cursor.execute("SELECT ciphertext FROM agentplatform_tenantsecret")
        (stored,) = cursor.fetchone()
    assert value not in stored and re.fullmatch(r"[A-Za-z0-9_=-]+", stored)
    assert secret_value(tenant_id=alice.tenant.pk, name="openai") == value

    Agent.objects.filter(pk=alice.agent.pk).update(llm={"api_key_secret": "openai"})
    alice.agent.refresh_from_db()
    assert options_for(alice.agent).api_key == value

    assert bob.client().get("/api/v1/secrets/").json()["results"] == []
    assert bob.client().delete("/api/v1/secrets/openai/").status_code == 404
    assert alice.client().delete("/api/v1/secrets/openai/").status_code == 204


def test_dependency_audit_of_the_pinned_set() -> None:
    """pip-audit against the exact pins of pyproject.toml, when a vulnerability service can
    be reached; offline, the test says so and skips."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    pins = sorted(set(re.findall(r'"([A-Za-z0-9_.\-\[\]]+==[^"]+)"', pyproject)))
    requirements = ROOT / ".data" / "audit-requirements.txt"
    requirements.parent.mkdir(exist_ok=True)
    requirements.write_text("\n".join(re.sub(r"\[.*?\]", "", pin) for pin in pins) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps",
         "--disable-pip", "--progress-spinner", "off", "--format", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout or "{}")
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        pytest.skip("no vulnerability service reachable from here: pip-audit audited nothing")
    vulnerable = {d["name"]: [v["id"] for v in d["vulns"]] for d in audited if d.get("vulns")}
    assert not vulnerable, vulnerable
