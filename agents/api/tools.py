"""REST endpoints for a tenant's own tools: they translate HTTP and call agents.tenant_tools."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from agentplatform.core.tenancy import access_object
from agentplatform.http.lag import ListMayLag
from agents import tenant_tools
from agents.api.serializers import ToolCreatedSerializer, ToolSerializer, ToolUpdateSerializer
from agents.api.views import TenantViewSet
from agents.models import TenantTool


class ToolViewSet(
    ListMayLag,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    """Tools of the tenant that its agents may call (listed by name in an agent's
    `tools`). Creating an http tool shows its signing secret once; no Idempotency-Key
    replay of that answer is kept (it would store the secret in clear). Saving an mcp tool
    lists its server's tools (422 on `url` or `remote_name` when that fails)."""

    queryset = TenantTool.objects.none()  # for the schema generator
    serializer_class = ToolSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[TenantTool]:
        tools: QuerySet[TenantTool] = tenant_tools.tool_list(tenant=self.tenant)
        return tools

    def get_object(self) -> TenantTool:
        return access_object(TenantTool, tenant=self.tenant, id=self.kwargs["pk"])

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "partial_update":
            return ToolUpdateSerializer
        return ToolSerializer

    @extend_schema(request=ToolSerializer, responses={201: ToolCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = ToolSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        spec = tenant_tools.ToolSpec(**data.validated_data)
        try:
            tool, secret = tenant_tools.tool_create(tenant=self.tenant, spec=spec, actor=self.actor)
        except tenant_tools.ToolInvalid as error:
            raise ValidationError({error.field: [str(error)]}) from None
        tool.secret = secret  # type: ignore[attr-defined]  # shown this once
        return Response(ToolCreatedSerializer(tool).data, status=201)

    def perform_update(self, serializer: BaseSerializer[TenantTool]) -> None:
        assert isinstance(serializer.instance, TenantTool)
        try:
            tenant_tools.tool_update(
                tool=serializer.instance, actor=self.actor, **serializer.validated_data
            )
        except tenant_tools.ToolInvalid as error:
            raise ValidationError({error.field: [str(error)]}) from None

    @extend_schema(request=None, responses={200: ToolSerializer})
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        """An mcp tool's description and schema taken again from its server's listing."""
        tool = self.get_object()
        try:
            tool = tenant_tools.tool_refresh(tool=tool, actor=self.actor)
        except tenant_tools.ToolInvalid as error:
            raise ValidationError({error.field: [str(error)]}) from None
        return Response(ToolSerializer(tool).data)

    def perform_destroy(self, instance: TenantTool) -> None:
        tenant_tools.tool_delete(tool=instance, actor=self.actor)
