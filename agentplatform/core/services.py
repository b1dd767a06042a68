"""Write services of the platform layer: tenants, API keys, operators."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta
from functools import cache

from django.contrib.auth.models import User
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model
from django.utils import timezone

from agentplatform.core import keycache, rls
from agentplatform.core.audit import Actor, audit_delete, audit_record, audited
from agentplatform.core.dbbackend.base import DatabaseWrapper as ScopedDatabaseWrapper
from agentplatform.infra import rows
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


def api_key_authenticate(
    raw: str, *, current: keycache.EpochCheck = keycache.epoch_is_current
) -> ApiKey | None:
    """The active key matching `raw` (with its tenant loaded), or None.

    The hash comparison is constant-time so response timing tells nothing about a near miss.
    A key this process kept (`keycache`) is valid once `current` says its tenant's epoch
    still holds (a GET, or the REST throttle's script with it); one looked up leaves the
    database connection in its tenant's scope (a request goes on there; code in another
    scope has its own set again before its next statement).
    """
    scheme, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != "ap" or not prefix or not secret:
        return None
    hashed = _hash_secret(secret)
    known = keycache.kept_secret_hash(prefix)
    if known is not None and not hmac.compare_digest(known, hashed):
        return None

    def usable(key: ApiKey) -> bool:
        return (
            hmac.compare_digest(key.hashed_secret, hashed)
            and key.revoked_at is None
            and key.tenant.status == Tenant.Status.ACTIVE
        )

    key = keycache.kept_key(prefix, usable, current)
    if key is None:
        epoch = keycache.epoch_before_lookup(prefix)
        key = _key_with_tenant(prefix)
        if key is not None:
            keycache.keep(key, epoch)
        if key is None or not usable(key):
            return None
    # A looked-up key left the connection in this scope; a kept key's scope is set with
    # the touch's statement, if any (the same round trip).
    with rls.tenant_scope(key.tenant_id):
        _touch(key)
    return key


def _key_with_tenant(prefix: str) -> ApiKey | None:
    """The key with this prefix and its tenant, found across tenants (the key names its
    tenant) by the SQL function of migration 0007, in the one statement that also moves the
    connection into that tenant's scope. From the ORM this took three round trips per
    request: into the cross-tenant scope, the lookup, into the tenant's scope."""
    rls.log_crossing(rls.CrossTenantReason.CREDENTIAL_LOOKUP, "api key")
    connection = connections[DEFAULT_DB_ALIAS]  # credentials never come from a replica
    assert isinstance(connection, ScopedDatabaseWrapper)
    try:
        with connection.cursor() as cursor:
            # The function sees every key whatever the connection's scope (its SET clause),
            # so no setting of the current scope goes before it.
            connection.scope_set_by_statement(rls.current())
            cursor.execute(_credential_sql(), [prefix])
            row = cursor.fetchone()
        if row is None:
            return None
        keys = rows.width(ApiKey)
        key = rows.from_row(ApiKey, row[2 : 2 + keys], DEFAULT_DB_ALIAS)
        key.tenant = rows.from_row(Tenant, row[2 + keys :], DEFAULT_DB_ALIAS)
    finally:
        # Unknown unless the key was read: with a row the connection is in the key's
        # tenant, without one (or on a failure) it has whatever scope it came with.
        connection.scope_set_by_statement(None)
    connection.scope_set_by_statement(rls.tenant_scope_of(key.tenant_id))
    return key


@cache
def _credential_sql() -> str:
    # Names from the models and rls; the prefix is a bound parameter.
    return (
        f"SELECT set_config('{rls.GUC_TENANTS}', (c.tenant).id::text, false), "  # noqa: S608
        f"set_config('{rls.GUC_ALL}', 'off', false), "
        f"{rows.select_list(ApiKey, '(c.api_key)')}, {rows.select_list(Tenant, '(c.tenant)')} "
        "FROM agentplatform_api_key_credential(%s) c"
    )


def _touch(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
        keycache.used(key, now)


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
