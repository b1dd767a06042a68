from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PlatformConfig(AppConfig):
    name = "agentplatform"
    label = "agentplatform"
    verbose_name = "Platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The Celery app must be loaded in web processes too, so shared tasks enqueue to it.
        from agentplatform.core import rls
        from agentplatform.http import schema  # noqa: F401  (checks, schema: registered on import)
        from agentplatform.project.celery import app  # noqa: F401

        # Once per `migrate`, after every app's migrations: policies and grants.
        post_migrate.connect(rls.install, sender=self, dispatch_uid="agentplatform.core.rls")
