"""REST endpoints for agents and sessions: they translate HTTP and call services."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from agentplatform.authentication import request_tenant
from agentplatform.idempotency import idempotent
from agentplatform.models import Tenant
from agentplatform.pagination import CreatedCursorPagination
from agents import selectors, services
from agents.api.serializers import AgentSerializer, MessageSerializer, SessionSerializer
from agents.models import Agent, Message, Session


class TenantViewSet(viewsets.GenericViewSet):
    """A viewset whose every query is scoped to the tenant of the request's API key."""

    @property
    def tenant(self) -> Tenant:
        return request_tenant(self.request)


class AgentViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    serializer_class = AgentSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Agent]:
        return selectors.agent_list(tenant=self.tenant)

    def get_object(self) -> Agent:
        return selectors.access_agent(tenant=self.tenant, id=self.kwargs["pk"])

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: BaseSerializer[Agent]) -> None:
        serializer.instance = services.agent_create(tenant=self.tenant, **serializer.validated_data)

    def perform_update(self, serializer: BaseSerializer[Agent]) -> None:
        assert isinstance(serializer.instance, Agent)
        services.agent_update(agent=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Agent) -> None:
        services.agent_delete(agent=instance)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("agent", OpenApiTypes.UUID, description="Only this agent's."),
            OpenApiParameter("user_id", OpenApiTypes.STR, description="Only this end user's."),
            OpenApiParameter("status", OpenApiTypes.STR, enum=Session.Status.values),
        ]
    )
)
class SessionViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    serializer_class = SessionSerializer

    def get_queryset(self) -> QuerySet[Session]:
        params = self.request.query_params
        return selectors.session_list(
            tenant=self.tenant,
            agent_id=_uuid_or_none(params.get("agent")),
            user_id=params.get("user_id"),
            status=params.get("status"),
        )

    def get_object(self) -> Session:
        return selectors.access_session(tenant=self.tenant, id=self.kwargs["pk"])

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: BaseSerializer[Session]) -> None:
        data = dict(serializer.validated_data)
        agent = selectors.access_agent(tenant=self.tenant, id=data.pop("agent"))
        serializer.instance = services.session_open(tenant=self.tenant, agent=agent, **data)

    def perform_destroy(self, instance: Session) -> None:
        services.session_delete(session=instance)


class SeqCursorPagination(CreatedCursorPagination):
    ordering = "seq"


class SessionMessagesViewSet(mixins.ListModelMixin, TenantViewSet):
    serializer_class = MessageSerializer
    pagination_class = SeqCursorPagination

    def get_queryset(self) -> QuerySet[Message]:
        session = selectors.access_session(tenant=self.tenant, id=self.kwargs["session_pk"])
        return selectors.message_list(session=session)


def _uuid_or_none(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError({"agent": ["Must be a UUID."]}) from None
