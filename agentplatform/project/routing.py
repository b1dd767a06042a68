"""Websocket routes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import path

from agentplatform.http.echo import EchoConsumer
from agents.consumers import SessionConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/sessions/<str:session_id>/", SessionConsumer.as_asgi()),
]
if settings.WS_ECHO_ENDPOINT:
    websocket_urlpatterns.append(path("ws/echo/", EchoConsumer.as_asgi()))
