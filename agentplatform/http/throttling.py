from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from agentplatform.http.authentication import TenantPrincipal


class TenantRateThrottle(SimpleRateThrottle):
    """A request budget per tenant (all its keys together), counted in Redis.

    The cache is django-redis, so every server instance shares the same counters.
    """

    scope = "tenant"

    def allow_request(self, request: Request, view: Any) -> bool:
        principal = request.user
        if isinstance(principal, TenantPrincipal) and principal.tenant.api_rate:
            # The tenant's own budget (Tenant.api_rate) instead of API_THROTTLE_RATE.
            self.rate = principal.tenant.api_rate
            self.num_requests, self.duration = self.parse_rate(self.rate)
        return bool(super().allow_request(request, view))

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.user, TenantPrincipal):
            return None
        return f"throttle:{self.scope}:{request.user.tenant.pk}"
