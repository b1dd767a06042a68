"""Admin for tenants, operators and API keys (the full console is built on this)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from agentplatform.core.console import TenantScopedAdmin, is_superuser, operator_actor
from agentplatform.core.services import api_key_revoke
from agentplatform.models import ApiKey, AuditEvent, Membership, Tenant, TenantSecret


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    tenant_field = "pk"
    list_display = ["slug", "name", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        # A tenant's managers may rename it; its status and request budget are the platform's.
        return [] if is_superuser(request) else ["status", "api_rate"]

    def get_inlines(self, request: HttpRequest, obj: Tenant | None = None) -> list[Any]:
        # Picking a user lists every login of the platform: superusers only.
        return list(self.inlines) if is_superuser(request) else []

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request)  # tenants are created by the platform's operators

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_superuser(request)


@admin.register(ApiKey)
class ApiKeyAdmin(TenantScopedAdmin):
    # The secret is never stored in clear, and its hash is never shown.
    list_display = ["__str__", "tenant", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant"]
    fields = ["tenant", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["tenant", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created by `create_api_key`, which shows the secret once

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset:
            if not self.has_change_permission(request, key):
                continue  # a viewer of this tenant
            api_key_revoke(key=key, actor=operator_actor(request))
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]

    # Choosing a user lists every login of the platform: superusers manage memberships.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_superuser(request)


@admin.register(AuditEvent)
class AuditEventAdmin(TenantScopedAdmin):
    """Read-only: the trail is append-only in the database too."""

    list_display = ["created_at", "tenant", "actor_kind", "actor_id", "action", "target_type",
                    "target_id"]  # fmt: skip
    list_filter = ["action", "actor_kind", "tenant"]
    search_fields = ["target_id", "actor_id", "action"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(TenantSecret)
class TenantSecretAdmin(TenantScopedAdmin):
    """Names only: the value is encrypted at rest and never shown (set it through the API)."""

    list_display = ["name", "tenant", "created_at", "updated_at"]
    list_filter = ["tenant"]
    fields = ["tenant", "name", "created_at", "updated_at"]
    readonly_fields = ["tenant", "name", "created_at", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
