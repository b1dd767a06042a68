"""REST endpoints for runs: start (in the background or waited on), read, list, cancel,
answer, and join a run's frames as server-sent events. They translate HTTP and call
agents.runs and agents.entry."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, transaction
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from agentplatform.core import rls
from agentplatform.http.idempotency import idempotent, replay_response, request_idempotency_key
from agentplatform.http.problems import Conflict
from agentplatform.http.serializers import query_filters
from agents import runs, selectors
from agents.api.errors import failure_problem, refusal_problem
from agents.api.serializers import (
    RunActionsSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunFiltersSerializer,
    RunSerializer,
)
from agents.api.sse import EventStreamRenderer, format_event
from agents.api.views import TenantViewSet, turn_event_stream
from agents.engine.turn import TURN_FAILURES, TurnResult
from agents.entry import turn_begin
from agents.errors import TurnRefused
from agents.live import frames_after
from agents.models import Run, Session
from agents.tools import Approval

JOIN_POLL_SECONDS = 0.05
JOIN_STATUS_EVERY_SECONDS = 1.0
JOIN_MAX_SECONDS = 600.0


@extend_schema_view(list=extend_schema(parameters=[RunFiltersSerializer]))
class SessionRunsViewSet(mixins.ListModelMixin, TenantViewSet):
    serializer_class = RunSerializer
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def get_queryset(self) -> QuerySet[Run]:
        session = selectors.access_session(tenant=self.tenant, id=self.kwargs["session_pk"])
        filters = query_filters(self.request, RunFiltersSerializer)
        return selectors.run_list(session=session, status=filters.get("status"))

    @extend_schema(
        request=RunCreateSerializer,
        responses={201: RunSerializer, 202: RunSerializer},
        description=(
            "Starts a run. `background: true` answers 202 at once (a worker runs it; follow "
            "it with GET /runs/{id}/ or /runs/{id}/events/); otherwise the request waits for "
            "the run's end (201), streaming its frames with `Accept: text/event-stream`."
        ),
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # Found once, before the body is read: another tenant's session is a 404 whatever it holds.
        session = selectors.access_session(tenant=self.tenant, id=self.kwargs["session_pk"])
        data = RunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["background"]:
            return self._background(request, session)
        return self._foreground(request, session, data.validated_data)

    @idempotent
    def _background(self, request: Request, session: Session) -> Response:
        data = request.data
        try:
            with transaction.atomic():
                run = runs.run_create(
                    session=session, content=data["content"], metadata=data.get("metadata")
                )
        except TurnRefused as error:  # content over AGENTS["MAX_MESSAGE_CHARS"], say
            raise refusal_problem(error) from None
        response = Response(RunSerializer(run).data, status=202)
        response["Location"] = f"/api/v1/runs/{run.pk}/"
        return response

    def _foreground(
        self, request: Request, session: Session, data: dict[str, Any]
    ) -> HttpResponseBase:
        try:
            pending = turn_begin(
                session=session,
                content=data["content"],
                key=request_idempotency_key(request),
                metadata=data.get("metadata"),
            )
        except TurnRefused as error:
            raise refusal_problem(error) from None
        if pending.replay is not None:
            return replay_response(*pending.replay)
        if isinstance(request.accepted_renderer, EventStreamRenderer):
            return turn_event_stream(pending, record=_run_body)
        try:
            pending.run(record=_run_body)
        except TURN_FAILURES as error:
            raise failure_problem(error) from error
        return Response(pending.recorded, status=201)


class RunViewSet(mixins.RetrieveModelMixin, TenantViewSet):
    queryset = Run.objects.none()  # for the schema generator
    serializer_class = RunDetailSerializer
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def get_object(self) -> Run:
        return selectors.access_run(tenant=self.tenant, id=self.kwargs["pk"])

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = self.get_object()
        context = {"messages": selectors.run_messages(run=run)}
        return Response(RunDetailSerializer(run, context=context).data)

    @extend_schema(request=None, responses={200: RunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel the run; answers its state once it stopped (or after a few seconds)."""
        run = runs.run_cancel(run=self.get_object(), actor=self.actor)
        return Response(RunSerializer(run).data)

    @extend_schema(request=RunActionsSerializer, responses={202: RunSerializer})
    @action(detail=True, methods=["post"])
    def actions(self, request: Request, pk: str | None = None) -> Response:
        """Answer the run's pending calls by id: client tools' outputs and approval
        decisions, all at once or a few at a time. Once every call has its answer, the
        run is queued again (202) and a worker resumes it."""
        run = self.get_object()
        data = RunActionsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        answers = [
            runs.Answer(item["tool_call_id"], output=item["output"])
            for item in data.validated_data.get("tool_outputs", [])
        ] + [
            runs.Answer(item["tool_call_id"], approve=item["approve"], reason=item["reason"])
            for item in data.validated_data.get("decisions", [])
        ]
        try:
            run = runs.run_act(run=run, answers=answers, decided_by=Approval.API, actor=self.actor)
        except runs.RunConflict as error:
            raise Conflict(str(error), code=error.code) from None
        except runs.ActionInvalid as error:
            raise ValidationError({_answer_field(error.field, answers): [str(error)]}) from None
        return Response(RunSerializer(run).data, status=202)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after_seq",
                OpenApiTypes.INT,
                description="Replay the run's frames after this session frame seq (or send "
                "Last-Event-ID).",
            )
        ],
        responses={(200, "text/event-stream"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> StreamingHttpResponse:
        """Join the run's frames as server-sent events, from any server instance: what it
        published so far, then live, until it ends or waits for an action."""
        run = self.get_object()
        after = _after_seq(request)
        response = StreamingHttpResponse(_join(run, after), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


def _run_body(result: TurnResult) -> dict[str, Any]:
    """A waited-on run's 201 body, which an idempotent retry gets again."""
    assert result.run is not None
    return dict(RunSerializer(result.run).data)


def _answer_field(field: str, answers: list[runs.Answer]) -> str:
    # `[i].tool_call_id` -> the list it came from: outputs first, then decisions.
    index = int(field[1 : field.index("]")])
    outputs = sum(1 for answer in answers if answer.approve is None)
    if index < outputs:
        return f"tool_outputs{field}"
    return f"decisions[{index - outputs}]{field[field.index(']') + 1 :]}"


def _after_seq(request: Request) -> int:
    raw = request.query_params.get("after_seq") or request.headers.get("Last-Event-ID") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({"after_seq": ["Must be an integer."]}) from None
    if value < 0:
        raise ValidationError({"after_seq": ["Must be >= 0."]})
    return value


_STOPS = {*Run.FINAL, Run.Status.REQUIRES_ACTION}


async def _join(run: Run, after: int) -> AsyncIterator[bytes]:
    """The run's frames after `after`, then new ones as they come, until a `run` frame says
    it ended or waits (or the row says so: frames are kept ~15 minutes). An async iterator,
    which Django's ASGI handler sends as it goes (a sync one it reads to its end first); the
    reads themselves run in threads, in the run's tenant scope."""
    run_id, started = str(run.pk), time.monotonic()
    checked_at = started
    while time.monotonic() - started < JOIN_MAX_SECONDS:
        check = time.monotonic() - checked_at >= JOIN_STATUS_EVERY_SECONDS
        frames, status = await _poll(run, after, check or run.status in _STOPS)
        for seq, text in frames:
            after = seq
            frame = json.loads(text)
            if frame.get("run") != run_id:
                continue
            yield format_event(frame["type"], frame)
            if frame["type"] == "run" and frame.get("status") in _STOPS:
                return
        if status is not None:
            checked_at = time.monotonic()
            if status in _STOPS:
                yield format_event("run", {"type": "run", "run": run_id, "status": status})
                return
        await asyncio.sleep(JOIN_POLL_SECONDS)


@sync_to_async(thread_sensitive=False)
def _poll(run: Run, after: int, check: bool) -> tuple[list[tuple[int, str]], str | None]:
    """The session's frames after `after` and, when `check`, the run's status as stored."""
    frames = frames_after(run.session_id, after)
    if not check:
        return frames, None
    try:
        with rls.tenant_scope(run.tenant_id):
            run.refresh_from_db(fields=["status"])
    finally:
        close_old_connections()  # this thread is the loop's, not a request's
    return frames, run.status
