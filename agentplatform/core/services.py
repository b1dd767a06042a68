"""Write services of the platform layer: tenants, API keys, operators."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from agentplatform.core import rls
from agentplatform.core.audit import Actor, audit_delete, audit_record, audited
from agentplatform.models import ApiKey, Membership, Tenant

KEY_PREFIX_BYTES = 6  # 12 hex characters: unique lookup without a table scan
# last_used_at is a hint for operators; writing it on every request would cost a row update each.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@audited("tenant.created")
@transaction.atomic
def tenant_create(*, slug: str, name: str = "", actor: Actor) -> tuple[Tenant, str]:
    """A new tenant and its first API key; the plaintext key is returned once."""
    tenant = Tenant(slug=slug, name=name or slug)
    tenant.full_clean()
    tenant.save()
    key, raw_key = _api_key_new(tenant=tenant, name="initial")
    audit_record(
        tenant=tenant,
        actor=actor,
        action="tenant.created",
        target=tenant,
        payload={"slug": slug, "api_key": key.prefix},
    )
    return tenant, raw_key


@audited("api_key.created")
@transaction.atomic
def api_key_create(*, tenant: Tenant, name: str = "", actor: Actor) -> tuple[ApiKey, str]:
    """A new key for the tenant. Only its hash is stored; the plaintext is returned once."""
    key, raw_key = _api_key_new(tenant=tenant, name=name)
    audit_record(
        tenant=tenant,
        actor=actor,
        action="api_key.created",
        target=key,
        payload={"prefix": key.prefix, "name": name},
    )
    return key, raw_key


def _api_key_new(*, tenant: Tenant, name: str) -> tuple[ApiKey, str]:
    prefix = secrets.token_hex(KEY_PREFIX_BYTES)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        tenant=tenant, name=name, prefix=prefix, hashed_secret=_hash_secret(secret)
    )
    return key, f"ap_{prefix}_{secret}"


@audited("api_key.revoked")
@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: Actor) -> None:
    """Revoke the key; revoking a revoked key changes nothing and records nothing."""
    if key.revoked_at is not None:
        return
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit_record(
        tenant=key.tenant,
        actor=actor,
        action="api_key.revoked",
        target=key,
        payload={"prefix": key.prefix},
    )


def api_key_authenticate(raw: str) -> ApiKey | None:
    """The active key matching `raw` (with its tenant loaded), or None.

    The hash comparison is constant-time so response timing tells nothing about a near miss.
    """
    scheme, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != "ap" or not prefix or not secret:
        return None
    # The key names its tenant, so it is found across tenants (agentplatform/core/rls.py).
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


@audited("operator.added")
@transaction.atomic
def operator_ensure(
    *,
    tenant: Tenant,
    username: str,
    password: str | None,
    role: str,
    superuser: bool = False,
    actor: Actor,
) -> tuple[User, bool]:
    """An operator login of the tenant; created (with `password`) when missing. Records an
    event when it made the tenant's membership, nothing when both existed."""
    user = User.objects.filter(username=username).first()
    created = user is None
    if user is None:
        user = User(username=username, is_staff=True, is_superuser=superuser)
        user.set_password(password or secrets.token_urlsafe(12))
        user.save()
    membership, added = Membership.objects.get_or_create(
        tenant=tenant, user=user, defaults={"role": role}
    )
    if added:
        audit_record(
            tenant=tenant,
            actor=actor,
            action="operator.added",
            target=membership,
            payload={"user": user.pk, "role": role, "new_login": created},
        )
    return user, created


@audited("admin.add", "admin.change")
@transaction.atomic
def admin_object_save(
    *,
    obj: Model,
    tenant_id: uuid.UUID | str | None,
    created: bool,
    fields: list[str],
    actor: Actor,
) -> None:
    """An operator's save of a tenant's row from the console, with its event."""
    obj.save()
    audit_record(
        tenant=Tenant(pk=tenant_id) if tenant_id else None,
        actor=actor,
        action="admin.add" if created else "admin.change",
        target=obj,
        payload={"model": obj._meta.label, "fields": sorted(fields)},
    )


@audited("admin.delete")
def admin_object_delete(*, obj: Model, actor: Actor) -> None:
    """An operator's delete of a tenant's row from the console, with its event."""
    audit_delete(obj, actor=actor, action="admin.delete", payload={"model": obj._meta.label})
