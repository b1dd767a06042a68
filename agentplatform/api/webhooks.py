"""REST endpoints of webhooks: endpoints, their secrets, test pings, the delivery log and
redelivery. They translate HTTP and call agentplatform.core.webhooks.

Creating an endpoint and rotating its secret do not honour `Idempotency-Key`: their answer
holds the secret, which a stored replay would keep in clear. A client that lost that answer
rotates the secret again.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.validators import RegexValidator
from django.db.models import QuerySet
from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from agentplatform.core import webhooks
from agentplatform.core.webhooks import SUBSCRIBABLE, EventType
from agentplatform.http.lag import ListMayLag
from agentplatform.http.schema import WHITESPACE
from agentplatform.http.serializers import (
    StrictCharField,
    StrictModelSerializer,
    StrictSerializer,
    query_filters,
)
from agentplatform.infra import outbound
from agentplatform.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from agents.api.views import TenantViewSet

# What OpenAPI can say about a URL the server takes; the rest (no credentials, a public
# address for IP literals, a valid host name) is checked by outbound.url_check.
URL_PATTERN = f"^https?://[^\\u0000{WHITESPACE}]+$"
MAX_GRACE_SECONDS = 7 * 86_400


@extend_schema_field(
    {"type": "string", "pattern": URL_PATTERN, "maxLength": outbound.MAX_URL_LENGTH}
)
class UrlField(StrictCharField):
    """A tenant's URL: the schema states its form; outbound.url_check the rest."""


class WebhookEndpointSerializer(StrictModelSerializer):
    url = UrlField(
        max_length=outbound.MAX_URL_LENGTH,
        validators=[RegexValidator(URL_PATTERN, "Must be an http:// or https:// URL.")],
        help_text="Where events are POSTed: http(s), a public address (checked again at each "
        "delivery). Redirects are not followed.",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=SUBSCRIBABLE),
        min_length=1,
        max_length=len(SUBSCRIBABLE),
        help_text="The event types sent to this endpoint.",
    )
    previous_secret_expires_at = serializers.SerializerMethodField(
        help_text="Until when a rotated-out secret still signs (null: none does)."
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "description", "events", "enabled", "disabled_reason",
                  "previous_secret_expires_at", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["id", "disabled_reason", "created_at", "updated_at"]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["url"].validators.append(_url_allowed)
        return fields

    @extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
    def get_previous_secret_expires_at(self, endpoint: WebhookEndpoint) -> str | None:
        expiry = webhooks.previous_secret_expiry(endpoint)
        return expiry.isoformat() if expiry else None


def _url_allowed(value: str) -> None:
    try:
        outbound.url_check(value)
    except outbound.OutboundRefused as error:
        raise serializers.ValidationError(str(error)) from None


SECRET_HELP = (
    "`whsec_` + base64, shown this once. Receivers verify with "
    "`standardwebhooks.Webhook(secret).verify(body, headers)`."
)


class WebhookSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text=SECRET_HELP)


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text=SECRET_HELP)

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class RotatedSecretSerializer(WebhookSecretSerializer):
    previous_secret_expires_at = serializers.DateTimeField(allow_null=True)


class RotateSecretSerializer(StrictSerializer):
    previous_secret_valid_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_GRACE_SECONDS,
        required=False,
        help_text="How long the current secret keeps signing beside the new one (default: "
        "the deployment's WEBHOOKS_SECRET_GRACE_SECONDS; 0 retires it at once).",
    )


class WebhookEventSerializer(serializers.ModelSerializer):
    payload = serializers.SerializerMethodField(help_text="The JSON body that was signed.")

    class Meta:
        model = WebhookEvent
        fields = ["id", "type", "created_at", "payload"]

    @extend_schema_field({"type": "object", "additionalProperties": True})
    def get_payload(self, event: WebhookEvent) -> Any:
        return json.loads(event.body)


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "status_code", "latency_ms", "error", "response_excerpt",
                  "created_at"]  # fmt: skip


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event = WebhookEventSerializer()
    attempt_count = serializers.IntegerField(source="attempts")
    attempts = WebhookAttemptSerializer(source="log", many=True)

    class Meta:
        model = WebhookDelivery
        fields = ["id", "event", "status", "attempt_count", "next_attempt_at",
                  "last_status_code", "last_error", "last_latency_ms", "created_at", "updated_at",
                  "attempts"]  # fmt: skip


class DeliveryFiltersSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices, required=False)
    event_type = serializers.ChoiceField(choices=[t.value for t in EventType], required=False)


class WebhookViewSet(
    mixins.CreateModelMixin,
    ListMayLag,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    """The tenant's webhook endpoints (Standard Webhooks)."""

    # For the schema generator only (it derives the id's type); requests use get_queryset.
    queryset = WebhookEndpoint.objects.none()
    serializer_class = WebhookEndpointSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        return webhooks.webhook_endpoint_list(tenant=self.tenant)

    def get_object(self) -> WebhookEndpoint:
        return webhooks.access_webhook_endpoint(tenant=self.tenant, id=self.kwargs["pk"])

    @extend_schema(responses={201: WebhookEndpointCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = WebhookEndpointSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhooks.webhook_endpoint_create(
            tenant=self.tenant, actor=self.actor, **data.validated_data
        )
        body = WebhookEndpointCreatedSerializer(endpoint).data
        return Response({**body, "secret": secret}, status=201)

    def perform_update(self, serializer: BaseSerializer[WebhookEndpoint]) -> None:
        assert isinstance(serializer.instance, WebhookEndpoint)
        webhooks.webhook_endpoint_update(
            endpoint=serializer.instance, actor=self.actor, **serializer.validated_data
        )

    def perform_destroy(self, instance: WebhookEndpoint) -> None:
        webhooks.webhook_endpoint_delete(endpoint=instance, actor=self.actor)

    @extend_schema(request=RotateSecretSerializer, responses={200: RotatedSecretSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """A new secret, shown this once; the current one keeps signing for a while, so
        each message carries both signatures until then."""
        endpoint = self.get_object()
        data = RotateSecretSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhooks.webhook_secret_rotate(
            endpoint=endpoint,
            actor=self.actor,
            grace_seconds=data.validated_data.get("previous_secret_valid_seconds"),
        )
        expiry = webhooks.previous_secret_expiry(endpoint)
        return Response({"secret": secret, "previous_secret_expires_at": expiry})

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Send a `webhook.test` event to this endpoint now (enabled or not); follow it in
        the delivery it answers with."""
        delivery = webhooks.webhook_test(endpoint=self.get_object())
        return Response(_delivery_body(delivery), status=202)


def _delivery_body(delivery: WebhookDelivery) -> Any:
    # Read back with its event and attempts (the write returned the bare row).
    endpoint = WebhookEndpoint(pk=delivery.endpoint_id, tenant_id=delivery.tenant_id)
    fresh = webhooks.access_webhook_delivery(endpoint=endpoint, id=delivery.pk)
    return WebhookDeliverySerializer(fresh).data


@extend_schema_view(list=extend_schema(parameters=[DeliveryFiltersSerializer]))
class WebhookDeliveryViewSet(
    ListMayLag, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet
):
    """An endpoint's delivery log, newest first, each delivery with its attempts."""

    queryset = WebhookDelivery.objects.none()  # for the schema generator
    serializer_class = WebhookDeliverySerializer

    def _endpoint(self) -> WebhookEndpoint:
        return webhooks.access_webhook_endpoint(tenant=self.tenant, id=self.kwargs["webhook_pk"])

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        filters = _filters(self.request)
        return webhooks.webhook_delivery_list(endpoint=self._endpoint(), **filters)

    def get_object(self) -> WebhookDelivery:
        return webhooks.access_webhook_delivery(endpoint=self._endpoint(), id=self.kwargs["pk"])

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    def redeliver(self, request: Request, webhook_pk: str, pk: str) -> Response:
        """Send this delivery again now, with the same `webhook-id` (receivers that already
        processed it can drop it); if that attempt fails, the retry schedule starts over."""
        delivery = webhooks.webhook_delivery_redeliver(delivery=self.get_object())
        return Response(_delivery_body(delivery), status=202)


def _filters(request: Request) -> dict[str, Any]:
    return query_filters(request, DeliveryFiltersSerializer)


urls = [
    path(
        "webhooks/<str:webhook_pk>/deliveries/",
        WebhookDeliveryViewSet.as_view({"get": "list"}),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<str:webhook_pk>/deliveries/<str:pk>/",
        WebhookDeliveryViewSet.as_view({"get": "retrieve"}),
        name="webhook-delivery",
    ),
    path(
        "webhooks/<str:webhook_pk>/deliveries/<str:pk>/redeliver/",
        WebhookDeliveryViewSet.as_view({"post": "redeliver"}),
        name="webhook-redeliver",
    ),
]
