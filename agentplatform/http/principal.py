"""Who an API request acts as: its tenant, through one of its keys."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from agentplatform.models import ApiKey, Tenant


@dataclass(frozen=True)
class TenantPrincipal:
    """`request.user` for API calls: the tenant acting through one of its keys."""

    tenant: Tenant
    api_key: ApiKey
    # The throttle's answer when the tenant's budget was spent with the key's check (a kept
    # key: one Redis call for both, see throttling.Prepaid); None: not spent yet.
    prepaid_wait_ms: int | None = None
    is_authenticated: bool = True
    is_anonymous: bool = False


def request_tenant(request: Request) -> Tenant:
    """The tenant of an API request that passed `IsTenant`."""
    principal = request.user
    if not isinstance(principal, TenantPrincipal):
        raise AuthenticationFailed("The API key is missing, malformed, revoked or unknown.")
    return principal.tenant
