"""Where HTTP reads may come from the replica (agentplatform/core/dbrouter.py).

Lists of a tenant's rows (agents, sessions, memories, summaries, tools, webhooks, schedules,
secrets), memory search and the console's pages tolerate a moment of lag: they read from
the replica when one is configured. A session's turn, its messages, runs and checkpoints,
any detail fetched by id and idempotent replays stay on the primary: a client reads back
what it has just written there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request
from rest_framework.response import Response

from agentplatform.core.dbrouter import reads_may_lag, replica_configured

# After a console write, that browser's pages read from the primary for this long, so the
# page the write redirects to shows it.
PRIMARY_AFTER_WRITE_COOKIE = "ap_reads_primary"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ListMayLag:
    """A DRF list whose rows may come from the replica (put it before ListModelMixin)."""

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with reads_may_lag():
            response: Response = super().list(request, *args, **kwargs)  # type: ignore[misc]
        return response


class ConsoleReadsMayLagMiddleware:
    """The console's pages (GET under /admin/), their templates' queries included, read from
    the replica; a browser that has just written there reads from the primary for
    DATABASE_REPLICA_STICKY_SECONDS. Runs after authentication and the tenant scope, which
    read credentials from the primary."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not replica_configured() or not request.path.startswith(settings.CONSOLE_PREFIX):
            return self.get_response(request)
        if request.method not in SAFE_METHODS:
            response = self.get_response(request)
            response.set_cookie(
                PRIMARY_AFTER_WRITE_COOKIE, "1", max_age=settings.DATABASE_REPLICA_STICKY_SECONDS,
                path=settings.CONSOLE_PREFIX, httponly=True, samesite="Lax",
                secure=settings.SESSION_COOKIE_SECURE,
            )  # fmt: skip
            return response
        if request.COOKIES.get(PRIMARY_AFTER_WRITE_COOKIE):
            return self.get_response(request)
        with reads_may_lag():
            return self.get_response(request)
