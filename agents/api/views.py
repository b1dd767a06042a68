"""REST endpoints for agents and sessions: they translate HTTP and call services."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from agentplatform.core.audit import Actor, actor_of
from agentplatform.core.vault import secret_delete, secret_set
from agentplatform.http.idempotency import idempotent, replay_response, request_idempotency_key
from agentplatform.http.lag import ListMayLag
from agentplatform.http.pagination import CreatedCursorPagination
from agentplatform.http.principal import request_tenant
from agentplatform.http.problems import BadGateway
from agentplatform.http.serializers import query_filters
from agentplatform.models import Tenant, TenantSecret
from agents import selectors, services
from agents.api.errors import failure_problem, refusal_problem
from agents.api.serializers import (
    AgentSerializer,
    ClientTokenSerializer,
    InvokeResultSerializer,
    InvokeSerializer,
    MessageCreateSerializer,
    MessageSerializer,
    SecretSerializer,
    SessionFiltersSerializer,
    SessionSerializer,
    TurnResultSerializer,
    message_create_data,
    turn_result_body,
)
from agents.api.sse import EventStreamRenderer, stream_in_thread
from agents.client_tokens import client_token_mint
from agents.engine.invoke import invoke_stateless
from agents.engine.turn import TURN_FAILURES, TurnResult
from agents.entry import PendingTurn, Sink, turn_begin
from agents.errors import TurnRefused
from agents.llm import LLMError
from agents.models import Agent, Message, Session


class TenantViewSet(viewsets.GenericViewSet):
    """A viewset whose every query is scoped to the tenant of the request's API key. Writes
    go through services, which record their own audit events (agentplatform.core.audit)."""

    @property
    def tenant(self) -> Tenant:
        return request_tenant(self.request)

    @property
    def actor(self) -> Actor:
        return actor_of(self.request)


class AgentViewSet(
    mixins.CreateModelMixin,
    ListMayLag,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    # For the schema generator only (it derives the id's type); requests use get_queryset.
    queryset = Agent.objects.none()
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
        serializer.instance = services.agent_create(
            tenant=self.tenant, actor=self.actor, **serializer.validated_data
        )

    def perform_update(self, serializer: BaseSerializer[Agent]) -> None:
        assert isinstance(serializer.instance, Agent)
        services.agent_update(
            agent=serializer.instance, actor=self.actor, **serializer.validated_data
        )

    def perform_destroy(self, instance: Agent) -> None:
        services.agent_delete(agent=instance, actor=self.actor)


@extend_schema_view(list=extend_schema(parameters=[SessionFiltersSerializer]))
class SessionViewSet(
    mixins.CreateModelMixin,
    ListMayLag,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    # For the schema generator only (it derives the id's type); requests use get_queryset.
    queryset = Session.objects.none()
    serializer_class = SessionSerializer

    def get_queryset(self) -> QuerySet[Session]:
        filters = query_filters(self.request, SessionFiltersSerializer)
        return selectors.session_list(
            tenant=self.tenant,
            agent_id=filters.get("agent"),
            user_id=filters.get("user_id"),
            status=filters.get("status"),
        )

    def get_object(self) -> Session:
        return selectors.access_session(tenant=self.tenant, id=self.kwargs["pk"])

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: BaseSerializer[Session]) -> None:
        data = dict(serializer.validated_data)
        agent = selectors.access_agent(tenant=self.tenant, id=data.pop("agent"))
        serializer.instance = services.session_open(
            tenant=self.tenant, agent=agent, actor=self.actor, **data
        )

    def perform_destroy(self, instance: Session) -> None:
        services.session_delete(session=instance, actor=self.actor)

    @extend_schema(request=None, responses={201: ClientTokenSerializer})
    @action(detail=True, methods=["post"], url_path="client-token")
    def client_token(self, request: Request, pk: str | None = None) -> Response:
        """A short-lived token for a browser's websocket on this session (`?token=`)."""
        minted = client_token_mint(session=self.get_object())
        return Response(ClientTokenSerializer(minted).data, status=201)


class SeqCursorPagination(CreatedCursorPagination):
    ordering = "seq"


class SessionMessagesViewSet(mixins.ListModelMixin, TenantViewSet):
    serializer_class = MessageSerializer
    pagination_class = SeqCursorPagination
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def get_queryset(self) -> QuerySet[Message]:
        session = selectors.access_session(tenant=self.tenant, id=self.kwargs["session_pk"])
        return selectors.message_list(session=session)

    @extend_schema(
        request=MessageCreateSerializer,
        responses={201: TurnResultSerializer},
        description=(
            "Runs a turn. With `Accept: text/event-stream` the reply streams as server-sent "
            "events (`accepted`, `queued`, `token`, `message`, `checkpoint`, `error`)."
        ),
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        key = request_idempotency_key(request)
        try:
            session = selectors.session_find(
                id=self.kwargs["session_pk"], tenant_ids=[self.tenant.pk]
            )
            data = message_create_data(request.data)
            pending = turn_begin(
                session=session, content=data["content"], key=key, metadata=_message_metadata(data)
            )
        except TurnRefused as error:
            raise refusal_problem(error) from None
        if pending.replay is not None:
            return replay_response(*pending.replay)
        if isinstance(request.accepted_renderer, EventStreamRenderer):
            return turn_event_stream(pending)
        try:
            pending.run(record=turn_result_body)  # the body a retry gets too
        except TURN_FAILURES as error:
            raise failure_problem(error) from error
        return Response(pending.recorded, status=201)


class InvokeView(APIView):
    """Stateless mode: the whole context in, the updated state out; nothing is kept."""

    @extend_schema(request=InvokeSerializer, responses={200: InvokeResultSerializer})
    def post(self, request: Request) -> Response:
        serializer = InvokeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        agent = selectors.access_agent(tenant=request_tenant(request), id=data["agent"])
        try:
            result = invoke_stateless(
                agent=agent,
                messages=[dict(m) for m in data["messages"]],
                user_config=data.get("user_config") or {},
                task_state=data.get("task_state") or {},
            )
        except LLMError as error:
            raise BadGateway(f"The LLM failed: {error}") from error
        return Response(InvokeResultSerializer(result).data)


def _message_metadata(data: dict[str, Any]) -> dict[str, Any]:
    metadata = dict(data.get("metadata") or {})
    if data.get("client_message_id"):
        metadata["client_message_id"] = data["client_message_id"]
    return metadata


def turn_event_stream(
    pending: PendingTurn, record: Callable[[TurnResult], Any] = turn_result_body
) -> StreamingHttpResponse:
    def run(emit: Callable[[str, dict[str, Any]], None]) -> None:
        with contextlib.suppress(*TURN_FAILURES):  # the turn published its `error` frame
            pending.run(Sink(emit=emit), record=record)

    response = StreamingHttpResponse(stream_in_thread(run), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # let reverse proxies pass events through at once
    return response


class SecretViewSet(
    ListMayLag,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    """Secrets of the tenant (e.g. an LLM API key an agent names in `llm.api_key_secret`),
    encrypted at rest; values go in and are never returned."""

    serializer_class = SecretSerializer
    lookup_field = "name"
    queryset = TenantSecret.objects.none()  # for the schema generator

    def get_queryset(self) -> QuerySet[TenantSecret]:
        return TenantSecret.objects.filter(tenant=self.tenant).order_by("name")

    def get_object(self) -> TenantSecret:
        secret = self.get_queryset().filter(name=self.kwargs["name"]).first()
        if secret is None:
            raise NotFound("No secret with this name.")
        return secret

    @extend_schema(responses={201: SecretSerializer, 200: SecretSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = SecretSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        secret, created = secret_set(
            tenant=self.tenant,
            name=data.validated_data["name"],
            value=data.validated_data["value"],
            actor=self.actor,
        )
        return Response(SecretSerializer(secret).data, status=201 if created else 200)

    def perform_destroy(self, instance: TenantSecret) -> None:
        secret_delete(secret=instance, actor=self.actor)
