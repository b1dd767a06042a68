"""REST endpoints for schedules: a session's list (and creating one there), then each
schedule by its id. They translate HTTP and call agents.schedules."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from agentplatform.http.idempotency import idempotent
from agentplatform.http.lag import ListMayLag
from agents import schedules, selectors
from agents.api.serializers import ScheduleSerializer
from agents.api.views import TenantViewSet
from agents.models import Schedule


class SessionSchedulesViewSet(ListMayLag, mixins.ListModelMixin, TenantViewSet):
    """The session's cron schedules, each starting a background run when due."""

    queryset = Schedule.objects.none()  # for the schema generator
    serializer_class = ScheduleSerializer

    def get_queryset(self) -> QuerySet[Schedule]:
        session = selectors.access_session(tenant=self.tenant, id=self.kwargs["session_pk"])
        return selectors.schedule_list(session=session)

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """A new schedule: from its next due time, each tick starts a background run of
        `content` on the session (see the session's runs)."""
        session = selectors.access_session(tenant=self.tenant, id=self.kwargs["session_pk"])
        data = ScheduleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        schedule = schedules.schedule_create(
            session=session, actor=self.actor, **data.validated_data
        )
        response = Response(ScheduleSerializer(schedule).data, status=201)
        response["Location"] = f"/api/v1/schedules/{schedule.pk}/"
        return response


class ScheduleViewSet(
    mixins.RetrieveModelMixin, mixins.UpdateModelMixin, mixins.DestroyModelMixin, TenantViewSet
):
    queryset = Schedule.objects.none()  # for the schema generator
    serializer_class = ScheduleSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_object(self) -> Schedule:
        return selectors.access_schedule(tenant=self.tenant, id=self.kwargs["pk"])

    def perform_update(self, serializer: BaseSerializer[Schedule]) -> None:
        assert isinstance(serializer.instance, Schedule)
        schedules.schedule_update(
            schedule=serializer.instance, actor=self.actor, **serializer.validated_data
        )

    def perform_destroy(self, instance: Schedule) -> None:
        schedules.schedule_delete(schedule=instance, actor=self.actor)
