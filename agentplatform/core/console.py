"""Tenant scoping for the operators' console (the Django admin).

An operator is a staff user with memberships: `viewer` (read only) or `manager` of some
tenants. `TenantScopedAdmin` is the base of every admin of tenant data: its queryset holds
only the operator's tenants' rows, and everything the admin builds on that queryset
follows, namely changelists, search, `RelatedOnlyFieldListFilter` filters, autocomplete
(which asks the related model's admin), raw-id popups (a changelist) and actions (the
selected rows of the changelist). A direct URL to another tenant's row is a 404, foreign-key
choices are limited to the operator's tenants, and writes need the manager role on the
row's tenant. Superusers see everything. Every add, change and delete is audited with the
operator as actor.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.admin import RelatedOnlyFieldListFilter
from django.contrib.auth.signals import user_login_failed
from django.db.models import Model, QuerySet
from django.dispatch import receiver
from django.http import Http404, HttpRequest, HttpResponse

from agentplatform.core import rls
from agentplatform.core.audit import Actor
from agentplatform.core.services import admin_object_delete, admin_object_save
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import deferred, values, write_batch
from agentplatform.models import Membership, Tenant


def operator_roles(request: HttpRequest) -> dict[uuid.UUID, str]:
    """The operator's role per tenant id (read once per request)."""
    cached: dict[uuid.UUID, str] | None = getattr(request, "_operator_roles", None)
    if cached is None:
        with rls.cross_tenant(rls.CrossTenantReason.CREDENTIAL_LOOKUP, "memberships"):
            cached = dict(
                Membership.objects.filter(user_id=request.user.pk or 0).values_list(
                    "tenant_id", "role"
                )
            )
        request._operator_roles = cached  # type: ignore[attr-defined]
    return cached


def managed_tenants(request: HttpRequest) -> list[uuid.UUID]:
    return [t for t, role in operator_roles(request).items() if role == Membership.Role.MANAGER]


def operator_actor(request: HttpRequest) -> Actor:
    return Actor("operator", str(request.user.pk))


def is_superuser(request: HttpRequest) -> bool:
    return bool(getattr(request.user, "is_superuser", False))


class TenantScopedAdmin(admin.ModelAdmin):
    # The path from the model to its tenant's id ("tenant" for TenantOwned rows).
    tenant_field = "tenant"

    # --- what the operator sees ----------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if is_superuser(request):
            return queryset
        return queryset.filter(**{f"{self.tenant_field}__in": list(operator_roles(request))})

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        found = super().get_object(request, object_id, from_field)
        if found is None:
            raise Http404("No such object.")  # another tenant's row is not there at all
        return found

    def get_list_filter(self, request: HttpRequest) -> Any:
        # A plain related filter would list every tenant; this one only those in the rows.
        return [
            (name, RelatedOnlyFieldListFilter) if name == "tenant" else name
            for name in super().get_list_filter(request)
        ]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if not is_superuser(request):
            related = db_field.related_model
            allowed = managed_tenants(request)
            if related is Tenant:
                kwargs["queryset"] = Tenant.objects.filter(pk__in=allowed)
            elif any(f.name == "tenant" for f in related._meta.fields):
                kwargs["queryset"] = related._default_manager.filter(tenant__in=allowed)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # --- what the operator may do --------------------------------------------------------

    def tenant_of(self, obj: Model) -> uuid.UUID | None:
        value = obj
        for part in self.tenant_field.split("__"):
            value = getattr(
                value, "pk" if part == "pk" else f"{part}_id" if part == "tenant" else part
            )
        return value  # type: ignore[return-value]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request) or bool(operator_roles(request))

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if is_superuser(request):
            return True
        roles = operator_roles(request)
        return bool(roles) if obj is None else self.tenant_of(obj) in roles

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if is_superuser(request):
            return True
        managed = managed_tenants(request)
        return bool(managed) if obj is None else self.tenant_of(obj) in managed

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self.has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request) or bool(managed_tenants(request))

    # --- writes, through the services that audit them ------------------------------------

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        tenant_id = self.tenant_of(obj)
        if not is_superuser(request) and tenant_id not in managed_tenants(request):
            raise Http404("No such tenant.")
        fields, actor = list(form.changed_data), operator_actor(request)
        admin_object_save(obj=obj, tenant_id=tenant_id, created=not change, fields=fields,
                          actor=actor)  # fmt: skip

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        admin_object_delete(obj=obj, actor=operator_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


# --- the admin login, rate-limited ---------------------------------------------------------

LOGIN_FAILURES_ALLOWED = 10  # per client address and per username, in the window
LOGIN_WINDOW_SECONDS = 900


def _login_failure_keys(request: HttpRequest, username: str) -> list[str]:
    address = request.META.get("REMOTE_ADDR", "unknown")
    return [
        redis_keys.login_failures("addr", address),
        redis_keys.login_failures("user", username.lower()),
    ]


def login_failure_record(request: HttpRequest, username: str) -> None:
    # One round trip (one per key on a Redis Cluster, where the two keys' slots differ).
    with write_batch():
        for key in _login_failure_keys(request, username):
            # The window starts at the first failure (EXPIRE NX needs Redis 7; the embedded
            # is 6.2).
            deferred("set", key, 0, ex=LOGIN_WINDOW_SECONDS, nx=True)
            deferred("incr", key)


def login_blocked(request: HttpRequest, username: str) -> bool:
    counts = values(_login_failure_keys(request, username))
    return any(int(count or 0) >= LOGIN_FAILURES_ALLOWED for count in counts)


def rate_limited_login(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The admin's login view, refusing further tries (429) from an address or for a
    username after LOGIN_FAILURES_ALLOWED failures in LOGIN_WINDOW_SECONDS."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = request.POST.get("username", "") if request.method == "POST" else ""
        if request.method == "POST" and login_blocked(request, username):
            minutes = LOGIN_WINDOW_SECONDS // 60
            return HttpResponse(
                f"Too many failed logins. Try again in up to {minutes} minutes.",
                status=429,
                content_type="text/plain",
            )
        return view(request, *args, **kwargs)

    return wrapper


@receiver(user_login_failed)
def _count_login_failure(
    sender: object, credentials: dict[str, Any], request: HttpRequest | None = None, **_: Any
) -> None:
    if request is not None:
        login_failure_record(request, str(credentials.get("username", "")))
