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
