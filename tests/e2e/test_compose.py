from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "compose-validation-only"},
    )
    assert result.returncode == 0, result.stderr


def test_compose_defines_the_production_services() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for service in ("postgres:", "redis:", "web:", "worker:", "beat:", "healthcheck:"):
        assert service in text
    assert "pgvector/pgvector" in text


def test_compose_runs_the_platform_as_a_role_row_level_security_binds() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "DATABASE_URL: postgresql://agentplatform_app:" in text
    assert "DATABASE_OWNER_URL: postgresql://agentplatform:" in text
    init = (ROOT / "deploy" / "postgres" / "10-app-role.sh").read_text()
    assert "CREATE ROLE agentplatform_app LOGIN NOSUPERUSER NOBYPASSRLS" in init


def test_compose_scales_web_and_worker_behind_one_published_port_on_rabbitmq() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    # A fixed host port on a service scaled past one would collide; the proxy publishes it.
    assert "ports" not in services["web"] and "ports" not in services["worker"]
    assert services["proxy"]["ports"] == ["${PORT:-8000}:8000"]
    caddyfile = (ROOT / "deploy" / "caddy" / "Caddyfile").read_text()
    assert "dynamic a web 8000" in caddyfile
    for name in ("web", "worker", "beat"):
        environment = services[name]["environment"]
        assert environment["CELERY_BROKER_URL"].startswith("amqp://"), name
    assert services["rabbitmq"]["healthcheck"]["test"][1] == "rabbitmq-diagnostics"
