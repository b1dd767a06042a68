"""Liveness (`/healthz`) and readiness (`/readyz`) probes."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from agentplatform.infra.redis import get_redis, on_cluster


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_postgres() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    except Exception as error:  # any failure means "not ready"; report it
        return f"{type(error).__name__}: {error}".strip()[:300]


def _check_redis() -> str | None:
    try:
        if on_cluster():
            get_redis().ping()  # every node the client knows answers
            return None
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        client.ping()
        client.close()
        return None
    except Exception as error:
        return f"{type(error).__name__}: {error}".strip()[:300]


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"postgres": _check_postgres(), "redis": _check_redis()}
    ready = all(problem is None for problem in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {name: problem or "ok" for name, problem in checks.items()},
    }
    return JsonResponse(body, status=200 if ready else 503)
