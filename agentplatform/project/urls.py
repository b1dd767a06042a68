from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from agentplatform.api import webhooks as webhook_api
from agentplatform.core.console import rate_limited_login
from agentplatform.http.health import healthz, readyz
from agents.api.runs import RunViewSet, SessionRunsViewSet
from agents.api.schedules import ScheduleViewSet, SessionSchedulesViewSet
from agents.api.tools import ToolViewSet
from agents.api.views import (
    AgentViewSet,
    InvokeView,
    SecretViewSet,
    SessionMessagesViewSet,
    SessionViewSet,
)
from agents.web import chat_page, chat_token
from memory.api.views import (
    CheckpointViewSet,
    MemoryViewSet,
    SessionCheckpointsViewSet,
    SessionContextView,
    SessionForkView,
    SessionRollbackView,
    SessionSummariesViewSet,
    UserEraseView,
)

router = SimpleRouter()
router.register("agents", AgentViewSet, basename="agent")
router.register("sessions", SessionViewSet, basename="session")
router.register("memories", MemoryViewSet, basename="memory")
router.register("checkpoints", CheckpointViewSet, basename="checkpoint")
router.register("secrets", SecretViewSet, basename="secret")
router.register("runs", RunViewSet, basename="run")
router.register("tools", ToolViewSet, basename="tool")
router.register("schedules", ScheduleViewSet, basename="schedule")
router.register("webhooks", webhook_api.WebhookViewSet, basename="webhook")

api_urls = [
    path(
        "sessions/<str:session_pk>/messages/",
        SessionMessagesViewSet.as_view({"get": "list", "post": "create"}),
        name="session-messages",
    ),
    path(
        "sessions/<str:session_pk>/runs/",
        SessionRunsViewSet.as_view({"get": "list", "post": "create"}),
        name="session-runs",
    ),
    path(
        "sessions/<str:session_pk>/schedules/",
        SessionSchedulesViewSet.as_view({"get": "list", "post": "create"}),
        name="session-schedules",
    ),
    path(
        "sessions/<str:session_pk>/summaries/",
        SessionSummariesViewSet.as_view({"get": "list"}),
        name="session-summaries",
    ),
    path("sessions/<str:session_pk>/context/", SessionContextView.as_view(), name="context"),
    path(
        "sessions/<str:session_pk>/checkpoints/",
        SessionCheckpointsViewSet.as_view({"get": "list"}),
        name="session-checkpoints",
    ),
    path("sessions/<str:session_pk>/rollback/", SessionRollbackView.as_view(), name="rollback"),
    path("sessions/<str:session_pk>/fork/", SessionForkView.as_view(), name="fork"),
    path("users/<str:user_id>/erase/", UserEraseView.as_view(), name="user-erase"),
    path("invoke/", InvokeView.as_view(), name="invoke"),
    *webhook_api.urls,
    path(
        "schema/",
        SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="schema", permission_classes=[], authentication_classes=[]
        ),
        name="docs",
    ),
    *router.urls,
]

urlpatterns = [
    path("api/v1/", include(api_urls)),
    # Before admin.site.urls, so this (rate-limited) login view answers /admin/login/.
    path("admin/login/", rate_limited_login(admin.site.login), name="admin-login"),
    path("admin/", admin.site.urls),
    path("chat/<str:session_id>/", chat_page, name="chat"),
    path("chat/<str:session_id>/token/", chat_token, name="chat-token"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]

handler400 = "agentplatform.http.problems.handler400"
handler404 = "agentplatform.http.problems.handler404"
handler500 = "agentplatform.http.problems.handler500"
