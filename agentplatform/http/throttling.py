"""A request budget per tenant (all its keys together), kept in Redis so that every server
process counts against the same budget.

The budget is a rate ("1200/min": Tenant.api_rate, else API_THROTTLE_RATE) enforced with the
generic cell rate algorithm: one Redis key per tenant holds the time its budget is spent up
to, and one script call checks and spends it atomically. DRF's SimpleRateThrottle kept the
timestamp of every request of the window in one cached list, read, unpickled, trimmed,
pickled and written back on each request: at the default rate that is a list of up to 1200
floats per request, and two requests on two processes could both read the old list and both
pass (a lost update).
"""

from __future__ import annotations

import math
from typing import Any

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from agentplatform.http.principal import TenantPrincipal
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import Script
from agentplatform.models import Tenant

# KEYS[1]: the time (ms, Redis's clock) up to which the budget is spent. ARGV: the interval
# between two requests at the rate, and the window (a full budget may be used at once).
# With KEYS[2] and ARGV[3], the tenant's credentials epoch and the one a kept API key was
# kept under: unless they are equal, nothing is spent and the answer is -1 (Prepaid).
# Returns 0 when the request may pass, else the milliseconds until one would.
_SPEND = Script("""
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return -1
end
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local spent = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local allowed_at = spent + interval - window
if allowed_at > now then
  return math.ceil(allowed_at - now)
end
redis.call('SET', KEYS[1], spent + interval, 'PX', math.ceil(spent + interval - now))
return 0
""")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'1200/min' -> (1200 requests, 60 seconds)."""
    count, _, period = rate.partition("/")
    return int(count), _UNITS[period[0]]


class TenantRateThrottle(BaseThrottle):
    scope = "tenant"
    THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES

    def __init__(self) -> None:
        self.wait_ms = 0

    @classmethod
    def budget(cls, tenant: Tenant) -> list[float]:
        """The script's ARGV for the tenant's rate: the interval and the window, in ms."""
        count, seconds = parse_rate(str(tenant.api_rate or cls.THROTTLE_RATES[cls.scope]))
        return [seconds * 1000 / count, seconds * 1000]

    def allow_request(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, TenantPrincipal):
            return True  # unauthenticated requests are refused before they cost anything
        if principal.prepaid_wait_ms is not None and type(self) is TenantRateThrottle:
            self.wait_ms = principal.prepaid_wait_ms  # spent with the key's check
        else:
            key = redis_keys.api_throttle(principal.tenant.pk)
            self.wait_ms = int(_SPEND([key], self.budget(principal.tenant)))
        return self.wait_ms == 0

    def wait(self) -> float | None:
        return math.ceil(self.wait_ms / 1000) if self.wait_ms else None


class Prepaid:
    """A kept API key's check (agentplatform.core.keycache) and the tenant's spend in one
    Redis call: both keys carry the tenant's hash tag, so one script reads the epoch and,
    only if the key's still holds, spends; the throttle then reads the answer from the
    principal. A kept key thus costs no round trip of its own. Every API view has exactly
    this throttle and `IsTenant` (the defaults; a test walks the URLs), so nothing is spent
    that would not have been; another throttle spends its own budget itself."""

    def __init__(self) -> None:
        self.wait_ms: int | None = None

    def check_and_spend(self, tenant: Tenant, epoch: bytes) -> bool:
        keys = [redis_keys.api_throttle(tenant.pk), redis_keys.credentials_epoch(tenant.pk)]
        answer = int(_SPEND(keys, [*TenantRateThrottle.budget(tenant), epoch]))
        if answer < 0:
            return False
        self.wait_ms = answer
        return True
