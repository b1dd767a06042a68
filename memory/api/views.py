"""REST endpoints of the memory tiers: memories, summaries, the compiled context."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentplatform.authentication import request_tenant
from agentplatform.idempotency import idempotent
from agentplatform.pagination import CreatedCursorPagination
from agents.api.views import TenantViewSet
from agents.selectors import access_agent, access_session
from memory import selectors
from memory.api.serializers import (
    MemoryCreateSerializer,
    MemoryHitSerializer,
    MemorySearchSerializer,
    MemorySerializer,
    SummarySerializer,
)
from memory.models import Memory, Summary
from memory.semantic import Source, memory_search, memory_upsert


@extend_schema_view(
    list=extend_schema(
        parameters=[OpenApiParameter("user_id", OpenApiTypes.STR, description="Only this user's.")]
    )
)
class MemoryViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantViewSet
):
    serializer_class = MemorySerializer

    def get_queryset(self) -> QuerySet[Memory]:
        return selectors.memory_list(
            tenant=self.tenant, user_id=self.request.query_params.get("user_id")
        )

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
        )
        return Response(MemorySerializer(memory).data, status=201 if created else 200)

    @extend_schema(request=MemorySearchSerializer, responses={200: MemoryHitSerializer(many=True)})
    @action(detail=False, methods=["post"])
    def search(self, request: Request) -> Response:
        data = MemorySearchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        agent_id = data.validated_data.get("agent")
        agent = access_agent(tenant=self.tenant, id=agent_id) if agent_id else None
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


class SessionSummariesViewSet(mixins.ListModelMixin, TenantViewSet):
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
