from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse

from agentplatform.core import rls
from agentplatform.http.problems import STORE_DOWN, problem_response, store_unavailable


class BodySizeLimitMiddleware:
    """Refuse bodies above API_MAX_BODY_BYTES with 413 before any view reads them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = self.limit_for(request.path)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return problem_response(400, "Content-Length is not a number.")
        if length > limit:
            return problem_response(
                413, f"The body is {length} bytes; the limit is {limit}.", code="payload_too_large"
            )
        return self.get_response(request)

    @staticmethod
    def limit_for(path: str) -> int:
        limits: dict[str, int] = getattr(settings, "BODY_LIMITS_BY_PREFIX", {})
        for prefix, limit in limits.items():
            if path.startswith(prefix):
                return limit
        return int(settings.API_MAX_BODY_BYTES)


class StoreUnavailableMiddleware:
    """Pages outside DRF (admin, chat page) answer 503 too when PostgreSQL or Redis is down,
    instead of a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return store_unavailable(exception) if isinstance(exception, STORE_DOWN) else None


class TenantScopeMiddleware:
    """The row-level security scope of a request (agentplatform/core/rls.py).

    Every request starts with no tenant, so a query the code forgot to filter sees nothing.
    A logged-in operator sees the tenants they belong to, a superuser every tenant (logged);
    an API key narrows the scope to its tenant when DRF authenticates it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with rls.request_scope():
            self._enter_operator_scope(request)
            return self.get_response(request)

    @staticmethod
    def _enter_operator_scope(request: HttpRequest) -> None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return
        if user.is_superuser:
            rls.enter_cross_tenant(
                rls.CrossTenantReason.SUPERUSER_CONSOLE, f"{user.get_username()} {request.path}"
            )
            return
        from agentplatform.core.console import operator_roles  # the admin loads after middleware

        rls.enter(rls.tenant_scope_of(*operator_roles(request)))


# The API (under API_PREFIX) authenticates by API key alone: no endpoint reads a browser
# session, login or message, so the browser pages' middleware below passes API requests
# straight through (they cost ~0.1 ms of each request's CPU: bench/turn_overhead.py).
# Subclasses, so Django's checks still find them in MIDDLEWARE. CsrfViewMiddleware stays as it
# is: `check --deploy` looks for it by name, and it costs API requests (CSRF-exempt) little.


class _PassingApiRequests:
    """Put before a MiddlewareMixin middleware: API requests skip it."""

    get_response: Callable[[HttpRequest], Any]

    def __call__(self, request: HttpRequest) -> Any:
        if request.path_info.startswith(settings.API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class PagesSessionMiddleware(_PassingApiRequests, SessionMiddleware):
    pass


class PagesAuthenticationMiddleware(_PassingApiRequests, AuthenticationMiddleware):
    pass


class PagesMessageMiddleware(_PassingApiRequests, MessageMiddleware):
    pass
