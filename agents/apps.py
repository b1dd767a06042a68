from __future__ import annotations

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents and sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The app's Celery tasks, registered in every process (services send some by name),
        # and the receiver that takes a deleted schedule's beat rows with it.
        from agents import schedules, tasks  # noqa: F401
