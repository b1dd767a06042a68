"""Admin for tenants, operators and API keys (the full console is built on this)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import RelatedOnlyFieldListFilter
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from agentplatform.core.console import (
    TenantScopedAdmin,
    is_superuser,
    managed_tenants,
    operator_actor,
)
from agentplatform.core.services import api_key_revoke
from agentplatform.core.webhooks import (
    webhook_delivery_redeliver,
    webhook_endpoint_delete,
    webhook_endpoint_update,
)
from agentplatform.models import (
    ApiKey,
    AuditEvent,
    Membership,
    Tenant,
    TenantSecret,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)


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
                    "target_id", "chain"]  # fmt: skip
    list_filter = ["action", "actor_kind", "tenant"]
    search_fields = ["target_id", "actor_id", "action"]
    show_full_result_count = False

    @admin.display(description="chain", ordering="chain_seq")
    def chain(self, event: AuditEvent) -> str:
        """Its place in the tenant's chain, or pending until the chainer links it (seconds)."""
        return "pending" if event.pending else f"#{event.chain_seq}"

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


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(TenantScopedAdmin):
    """Endpoints are made through the API (which shows the secret once); here operators see
    them, pause or resume them, and follow the delivery log. Secrets are never shown."""

    list_display = ["url", "tenant", "enabled", "disabled_reason", "created_at"]
    list_filter = ["enabled", "tenant"]
    search_fields = ["url", "description"]
    fields = ["tenant", "url", "description", "events", "enabled", "disabled_reason",
              "delivery_log", "created_at", "updated_at"]  # fmt: skip
    readonly_fields = ["tenant", "url", "events", "disabled_reason", "delivery_log",
                       "created_at", "updated_at"]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Delivery log")
    def delivery_log(self, endpoint: WebhookEndpoint) -> str:
        url = reverse("admin:agentplatform_webhookdelivery_changelist")
        count = endpoint.deliveries.count()
        return format_html(
            '<a href="{}?endpoint__id__exact={}">{} deliveries</a>', url, endpoint.pk, count
        )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not is_superuser(request) and obj.tenant_id not in managed_tenants(request):
            raise Http404("No such tenant.")
        fields = {name: form.cleaned_data[name] for name in form.changed_data}
        webhook_endpoint_update(endpoint=obj, actor=operator_actor(request), **fields)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        webhook_endpoint_delete(endpoint=obj, actor=operator_actor(request))


ATTEMPT_FIELDS = ("number", "created_at", "status_code", "latency_ms", "error", "response_excerpt")
DELIVERY_FIELDS = ("tenant", "endpoint", "event_id_", "event_type", "status", "attempts",
                   "next_attempt_at", "last_status_code", "last_latency_ms", "last_error",
                   "payload", "created_at", "updated_at")  # fmt: skip


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = ATTEMPT_FIELDS

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(TenantScopedAdmin):
    """The delivery log: each event to each endpoint with its attempts. Read-only, but for
    redelivery (same webhook-id)."""

    list_display = ["created_at", "event_type", "endpoint", "tenant", "status", "attempts",
                    "last_status_code", "last_latency_ms", "next_attempt_at"]  # fmt: skip
    list_filter = ["status", ("endpoint", RelatedOnlyFieldListFilter), "tenant"]
    list_select_related = ["event", "endpoint"]
    fields = readonly_fields = DELIVERY_FIELDS
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Event")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    @admin.display(description="webhook-id")
    def event_id_(self, delivery: WebhookDelivery) -> str:
        return str(delivery.event_id)

    @admin.display(description="Payload")
    def payload(self, delivery: WebhookDelivery) -> str:
        body = json.dumps(json.loads(delivery.event.body), indent=2)
        return format_html("<pre>{}</pre>", body)

    @admin.action(description="Redeliver selected (same webhook-id)", permissions=["change"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        sent = 0
        for delivery in queryset:
            if not self.has_change_permission(request, delivery):
                continue  # a viewer of this tenant
            webhook_delivery_redeliver(delivery=delivery)
            sent += 1
        self.message_user(request, f"Redelivering {sent} deliveries.", messages.SUCCESS)
