"""Per-tenant secrets (an agent's LLM API key, say), encrypted at rest.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) before they reach PostgreSQL;
the database, its backups and the admin only ever hold ciphertext, and no API returns a
value. The key comes from SECRETS_KEY (comma-separated Fernet keys: the first encrypts,
all decrypt, so keys can be rotated), or is derived from SECRET_KEY when that is unset.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import uuid

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import transaction

from agentplatform.core.audit import Actor, audit_delete, audit_record, audited
from agentplatform.models import Tenant, TenantSecret


class SecretUnavailable(Exception):
    """No such secret, or it cannot be decrypted with the configured keys."""


@functools.cache
def _cipher(keys: str, fallback: str) -> MultiFernet:
    if keys:
        return MultiFernet([Fernet(key.strip().encode()) for key in keys.split(",") if key.strip()])
    derived = base64.urlsafe_b64encode(hashlib.sha256(f"vault:{fallback}".encode()).digest())
    return MultiFernet([Fernet(derived)])


def cipher() -> MultiFernet:
    return _cipher(settings.SECRETS_KEY, settings.SECRET_KEY)


@audited("secret.set")
@transaction.atomic
def secret_set(*, tenant: Tenant, name: str, value: str, actor: Actor) -> tuple[TenantSecret, bool]:
    ciphertext = cipher().encrypt(value.encode()).decode()
    secret, created = TenantSecret.objects.update_or_create(
        tenant=tenant, name=name, defaults={"ciphertext": ciphertext}
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="secret.set",
        target=secret,
        payload={"name": name},  # never the value
    )
    return secret, created


@audited("secret.deleted")
def secret_delete(*, secret: TenantSecret, actor: Actor) -> None:
    audit_delete(secret, actor=actor, action="secret.deleted", payload={"name": secret.name})


def secret_value(*, tenant_id: uuid.UUID, name: str) -> str:
    """The decrypted value, for the platform's own use (never returned by an API)."""
    row = (
        TenantSecret.objects.filter(tenant_id=tenant_id, name=name)
        .values_list("ciphertext", flat=True)
        .first()
    )
    if row is None:
        raise SecretUnavailable(f"no secret named {name!r}")
    try:
        return cipher().decrypt(row.encode()).decode()
    except InvalidToken as error:
        raise SecretUnavailable(f"secret {name!r} cannot be decrypted with SECRETS_KEY") from error
