"""Write services of the platform layer: tenants, API keys, operators."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from agentplatform import rls
from agentplatform.models import ApiKey, Membership, Tenant

KEY_PREFIX_BYTES = 6  # 12 hex characters: unique lookup without a table scan
# last_used_at is a hint for operators; writing it on every request would cost a row update each.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def tenant_create(*, slug: str, name: str = "") -> tuple[Tenant, str]:
    """A new tenant and its first API key; the plaintext key is returned once."""
    tenant = Tenant(slug=slug, name=name or slug)
    tenant.full_clean()
    tenant.save()
    _, raw_key = api_key_create(tenant=tenant, name="initial")
    return tenant, raw_key


def api_key_create(*, tenant: Tenant, name: str = "") -> tuple[ApiKey, str]:
    """A new key for the tenant. Only its hash is stored; the plaintext is returned once."""
    prefix = secrets.token_hex(KEY_PREFIX_BYTES)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        tenant=tenant, name=name, prefix=prefix, hashed_secret=_hash_secret(secret)
    )
    return key, f"ap_{prefix}_{secret}"


def api_key_revoke(*, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


def api_key_authenticate(raw: str) -> ApiKey | None:
    """The active key matching `raw` (with its tenant loaded), or None.

    The hash comparison is constant-time so response timing tells nothing about a near miss.
    """
    scheme, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != "ap" or not prefix or not secret:
        return None
    # The key names its tenant, so it is found across tenants (agentplatform/rls.py).
    with rls.cross_tenant(rls.CrossTenantReason.CREDENTIAL_LOOKUP, "api key"):
        key = ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
        if key is None or not hmac.compare_digest(key.hashed_secret, _hash_secret(secret)):
            return None
        if key.revoked_at is not None or key.tenant.status != Tenant.Status.ACTIVE:
            return None
        _touch(key)
    return key


def _touch(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


def operator_ensure(
    *, tenant: Tenant, username: str, password: str | None, role: str, superuser: bool = False
) -> tuple[User, bool]:
    """An operator login of the tenant; created (with `password`) when missing."""
    user = User.objects.filter(username=username).first()
    created = user is None
    if user is None:
        user = User(username=username, is_staff=True, is_superuser=superuser)
        user.set_password(password or secrets.token_urlsafe(12))
        user.save()
    Membership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": role})
    return user, created
