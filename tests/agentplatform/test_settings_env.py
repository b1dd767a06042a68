from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentplatform.project.env import (
    ConfigError,
    env_bool,
    env_int,
    env_networks,
    env_rate,
    env_url,
)

ROOT = Path(__file__).resolve().parents[2]


def test_env_bool_refuses_a_word_that_is_not_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ConfigError, match="DEBUG"):
        env_bool("DEBUG", False)


def test_env_int_names_the_variable_and_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_MAX_BODY_BYTES", "12")
    with pytest.raises(ConfigError, match="API_MAX_BODY_BYTES=12 is below the minimum"):
        env_int("API_MAX_BODY_BYTES", 1024, minimum=1024)
    monkeypatch.setenv("API_MAX_BODY_BYTES", "lots")
    with pytest.raises(ConfigError, match="API_MAX_BODY_BYTES"):
        env_int("API_MAX_BODY_BYTES", 1024)


def test_env_url_refuses_a_wrong_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://localhost:6379")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        env_url("REDIS_URL", None, schemes=("redis",))


def test_env_networks_takes_cidrs_and_host_names_and_refuses_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTBOUND_ALLOWED_NETWORKS", "10.0.5.0/24, fd00::/8,hooks.internal,::1")
    assert env_networks("OUTBOUND_ALLOWED_NETWORKS", []) == [
        "10.0.5.0/24",
        "fd00::/8",
        "hooks.internal",
        "::1",
    ]
    monkeypatch.setenv("OUTBOUND_ALLOWED_NETWORKS", "10.0.0.0/33")
    with pytest.raises(ConfigError, match="is neither a network nor a host name"):
        env_networks("OUTBOUND_ALLOWED_NETWORKS", [])


def test_env_rate_refuses_a_malformed_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_THROTTLE_RATE", "fast")
    with pytest.raises(ConfigError, match="API_THROTTLE_RATE"):
        env_rate("API_THROTTLE_RATE", "10/s")


def test_a_bad_value_stops_start_up_with_a_message_naming_it() -> None:
    env = {**os.environ, "LLM_BASE_URL": "ftp://nowhere"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "LLM_BASE_URL" in result.stderr


def test_env_example_lists_every_variable_the_settings_read() -> None:
    import re

    source = (ROOT / "agentplatform" / "project" / "settings.py").read_text()
    read = set(re.findall(r'env_\w+\(\s*"([A-Z_]+)"', source))
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", example, flags=re.MULTILINE))
    assert read - listed == set()


@pytest.mark.parametrize(("threshold", "expected"), [("5", "True 5"), ("0", "False None")])
def test_prepared_statements_can_be_turned_off_for_poolers(threshold: str, expected: str) -> None:
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "o = settings.DATABASES['default']['OPTIONS']; "
        "print(o.get('server_side_binding', False), o.get('prepare_threshold'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DB_PREPARE_THRESHOLD": threshold},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == expected, result.stderr


def test_libpq_parameters_of_the_database_urls_reach_the_connections() -> None:
    """sslmode and the other libpq parameters in DATABASE_URL's query are kept next to the
    platform's own options (a require-TLS URL must not connect in the clear); a replica's
    URL brings its own over the primary's."""
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "d = settings.DATABASES; "
        "print(d['default']['OPTIONS']['sslmode'], d['default']['OPTIONS']['keepalives_idle'], "
        "'pool' in d['default']['OPTIONS'], d['replica']['OPTIONS']['sslmode'], "
        "d['replica']['OPTIONS']['keepalives_idle'])"
    )
    primary = "postgresql://app:pw@db.internal:5432/agentplatform"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": f"{primary}?sslmode=require&keepalives_idle=30",
            "DATABASE_REPLICA_URL": "postgresql://app:pw@replica.internal/agentplatform"
            "?sslmode=verify-full",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "require 30 True verify-full 30", result.stderr
