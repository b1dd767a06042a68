from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PlatformConfig(AppConfig):
    name = "agentplatform"
    label = "agentplatform"
    verbose_name = "Platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registered on import: the system checks, the schema's extensions, and the Celery app
        # with the platform's tasks (every process, web included, sends tasks to it; a task
        # sent by name must be registered here to run eagerly in tests).
        from agentplatform import tasks  # noqa: F401
        from agentplatform.core import keycache, rls
        from agentplatform.http import schema  # noqa: F401
        from agentplatform.project import checks  # noqa: F401
        from agentplatform.project.celery import app  # noqa: F401

        # Once per `migrate`, after every app's migrations: policies and grants.
        post_migrate.connect(rls.install, sender=self, dispatch_uid="agentplatform.core.rls")
        # Changes of tenants and API keys reach the keys each process keeps in memory.
        keycache.connect()
