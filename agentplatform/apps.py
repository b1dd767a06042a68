from __future__ import annotations

from django.apps import AppConfig


class PlatformConfig(AppConfig):
    name = "agentplatform"
    label = "agentplatform"
    verbose_name = "Platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The Celery app must be loaded in web processes too, so shared tasks enqueue to it.
        from agentplatform import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from agentplatform.celery import app  # noqa: F401
