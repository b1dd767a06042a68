"""The Celery app: worker and beat share the embedded Redis/PostgreSQL of `make run`."""

from __future__ import annotations

import os

from celery import Celery

from agentplatform.devtools import embedded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentplatform.project.settings")
embedded.configure(stop_on_exit=False)

app = Celery("agentplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
