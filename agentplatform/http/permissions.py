from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from agentplatform.http.principal import TenantPrincipal


class IsTenant(BasePermission):
    """The request was made with a valid API key of an active tenant."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, TenantPrincipal)
