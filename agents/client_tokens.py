"""Short-lived signed tokens that let a browser open one session's websocket.

A browser cannot set an Authorization header on a websocket, and must never hold the
tenant's API key; the tenant's backend (or the chat page, for a logged-in operator) mints
one of these instead: signed with SECRET_KEY, scoped to one session, expiring after
AGENTS["CLIENT_TOKEN_SECONDS"]. Verification is Django's signing (constant-time compare).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core import signing
from django.utils import timezone

from agents.conf import agents_settings
from agents.models import Session

SALT = "agentplatform.client-token.v1"


@dataclass(frozen=True)
class ClientToken:
    token: str
    session_id: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True)
class TokenScope:
    session_id: str
    tenant_id: str


def client_token_mint(*, session: Session) -> ClientToken:
    payload = {"s": str(session.pk), "t": str(session.tenant_id)}
    token = signing.dumps(payload, salt=SALT, compress=True)
    lifetime = timedelta(seconds=agents_settings().CLIENT_TOKEN_SECONDS)
    return ClientToken(token, session.pk, timezone.now() + lifetime)


def client_token_verify(token: str) -> TokenScope | None:
    """The session and tenant the token is for, or None when bad or expired."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=agents_settings().CLIENT_TOKEN_SECONDS)
    except signing.BadSignature:  # includes SignatureExpired
        return None
    if not isinstance(payload, dict) or not {"s", "t"} <= payload.keys():
        return None
    return TokenScope(session_id=str(payload["s"]), tenant_id=str(payload["t"]))
