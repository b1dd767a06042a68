"""REST endpoints of the memory tiers: memories, summaries, the compiled context."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentplatform.core.audit import actor_of
from agentplatform.core.dbrouter import reads_may_lag
from agentplatform.http.idempotency import idempotent
from agentplatform.http.lag import ListMayLag
from agentplatform.http.pagination import CreatedCursorPagination
from agentplatform.http.principal import request_tenant
from agentplatform.http.problems import Conflict
from agentplatform.http.serializers import query_filters
from agents.api.serializers import SessionSerializer
from agents.api.views import TenantViewSet
from agents.engine.concurrency import SessionBusy
from agents.models import Session
from agents.selectors import access_agent, access_session
from memory import selectors
from memory.api.serializers import (
    CheckpointRefSerializer,
    CheckpointSerializer,
    MemoryCreateSerializer,
    MemoryFiltersSerializer,
    MemoryHitSerializer,
    MemorySearchSerializer,
    MemorySerializer,
    RollbackReceiptSerializer,
    SummarySerializer,
)
from memory.checkpoints import checkpoint_fork, checkpoint_rollback
from memory.erasure import user_erase
from memory.models import Checkpoint, Memory, Summary
from memory.semantic import Source, memory_delete, memory_search, memory_upsert


@extend_schema_view(list=extend_schema(parameters=[MemoryFiltersSerializer]))
class MemoryViewSet(
    ListMayLag,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    # For the schema generator only (it derives the id's type); requests use get_queryset.
    queryset = Memory.objects.none()
    serializer_class = MemorySerializer

    def get_queryset(self) -> QuerySet[Memory]:
        filters = query_filters(self.request, MemoryFiltersSerializer)
        return selectors.memory_list(tenant=self.tenant, user_id=filters.get("user_id"))

    def get_object(self) -> Memory:
        return selectors.access_memory(tenant=self.tenant, id=self.kwargs["pk"])

    @extend_schema(
        request=MemoryCreateSerializer,
        responses={201: MemorySerializer, 200: MemorySerializer},
        description="Stores a fact; a near-identical one already stored gets this as a "
        "further source instead (200).",
    )
    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = MemoryCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent_id = data.validated_data.get("agent")
        agent = access_agent(tenant=self.tenant, id=agent_id) if agent_id else None
        key = request.auth
        memory, created = memory_upsert(
            tenant=self.tenant,
            user_id=data.validated_data["user_id"],
            text=data.validated_data["text"],
            agent=agent,
            source=Source("api", author=f"api_key:{getattr(key, 'prefix', '')}"),
            actor=actor_of(request),
        )
        return Response(MemorySerializer(memory).data, status=201 if created else 200)

    def perform_destroy(self, instance: Memory) -> None:
        memory_delete(memory=instance, actor=actor_of(self.request))

    @extend_schema(request=MemorySearchSerializer, responses={200: MemoryHitSerializer(many=True)})
    # Top-k hits, not a page of a list: no pagination (nor its parameters in the schema).
    @action(detail=False, methods=["post"], pagination_class=None, filter_backends=[])
    def search(self, request: Request) -> Response:
        data = MemorySearchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent_id = data.validated_data.get("agent")
        agent = access_agent(tenant=self.tenant, id=agent_id) if agent_id else None
        with reads_may_lag():  # its `touch` of the hits is a write: on the primary
            hits = memory_search(
                tenant=self.tenant,
                user_id=data.validated_data["user_id"],
                query=data.validated_data["query"],
                k=data.validated_data["k"],
                agent=agent,
            )
        return Response(MemoryHitSerializer(hits, many=True).data)


class OldestFirstPagination(CreatedCursorPagination):
    ordering = "created_at"


class SessionSummariesViewSet(ListMayLag, mixins.ListModelMixin, TenantViewSet):
    serializer_class = SummarySerializer
    pagination_class = OldestFirstPagination

    def get_queryset(self) -> QuerySet[Summary]:
        session = access_session(tenant=self.tenant, id=self.kwargs["session_pk"])
        return selectors.summary_list(session=session)


class SessionContextView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "query",
                OpenApiTypes.STR,
                description="The message to retrieve for (default: the last user message).",
            )
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, session_pk: str) -> Response:
        """The compiled context the next turn would see, with token counts per part."""
        session = access_session(tenant=request_tenant(request), id=session_pk)
        query = request.query_params.get("query")
        return Response(selectors.next_turn_context(session=session, query=query))


class SessionCheckpointsViewSet(mixins.ListModelMixin, TenantViewSet):
    """The session's checkpoint timeline, newest first."""

    serializer_class = CheckpointSerializer

    def get_queryset(self) -> QuerySet[Checkpoint]:
        session = access_session(tenant=self.tenant, id=self.kwargs["session_pk"])
        return selectors.checkpoint_list(session=session)


class CheckpointViewSet(mixins.RetrieveModelMixin, TenantViewSet):
    # For the schema generator only (it derives the id's type); requests use get_queryset.
    queryset = Checkpoint.objects.none()
    serializer_class = CheckpointSerializer

    def get_object(self) -> Checkpoint:
        return selectors.access_checkpoint(tenant=self.tenant, id=self.kwargs["pk"])


class SessionRollbackView(APIView):
    @extend_schema(request=CheckpointRefSerializer, responses={200: RollbackReceiptSerializer})
    def post(self, request: Request, session_pk: str) -> Response:
        """Make the checkpoint the session's head; later messages are kept as rolled back."""
        tenant = request_tenant(request)
        session, checkpoint = _session_and_checkpoint(request, tenant, session_pk)
        try:
            receipt = checkpoint_rollback(
                session=session, checkpoint=checkpoint, actor=actor_of(request)
            )
        except SessionBusy as error:
            raise Conflict(str(error), code="session_busy") from error
        return Response(RollbackReceiptSerializer(receipt).data)


class SessionForkView(APIView):
    @extend_schema(request=CheckpointRefSerializer, responses={201: SessionSerializer})
    def post(self, request: Request, session_pk: str) -> Response:
        """A new session whose history is the checkpoint's."""
        tenant = request_tenant(request)
        session, checkpoint = _session_and_checkpoint(request, tenant, session_pk)
        fork = checkpoint_fork(session=session, checkpoint=checkpoint, actor=actor_of(request))
        return Response(SessionSerializer(fork).data, status=201)


def _session_and_checkpoint(
    request: Request, tenant: Any, session_pk: str
) -> tuple[Session, Checkpoint]:
    session = access_session(tenant=tenant, id=session_pk)
    data = CheckpointRefSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    checkpoint = selectors.access_checkpoint(tenant=tenant, id=data.validated_data["checkpoint"])
    if checkpoint.session_id != session.pk:
        raise NotFound("No checkpoint with this id in this session.")
    return session, checkpoint


class UserEraseView(APIView):
    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, user_id: str) -> Response:
        """Delete everything kept about this end user in every store; a receipt of counts."""
        receipt = user_erase(
            tenant=request_tenant(request), user_id=user_id, actor=actor_of(request)
        )
        return Response(asdict(receipt))
