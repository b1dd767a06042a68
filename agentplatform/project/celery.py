"""The Celery app: worker and beat share the embedded Redis/PostgreSQL of `make run`."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from django.conf import settings

from agentplatform.devtools import embedded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentplatform.project.settings")
embedded.configure(stop_on_exit=False)

app = Celery("agentplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.celeryd_init.connect
def consume_configured_queues(*, instance: Any, options: dict[str, Any], **kwargs: Any) -> None:
    """WORKER_QUEUES picks the queues a worker consumes (all when empty), so a deployment
    can dedicate workers to a kind of work from the environment alone; `-Q` still wins.
    Selected here, before the worker sets its queues up, which keeps this selection when
    no `-Q` was given."""
    if settings.WORKER_QUEUES and not options.get("queues"):
        instance.app.amqp.queues.select(settings.WORKER_QUEUES)
