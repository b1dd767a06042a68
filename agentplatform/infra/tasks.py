"""Sending Celery tasks by name, so services never import a task module (a transport)."""

from __future__ import annotations

from typing import Any

from celery import current_app


def enqueue(task: str, *args: Any, countdown: float = 0) -> None:
    """Send a task by its name (eager in tests, like any registered task)."""
    current_app.signature(task, args=args).apply_async(countdown=countdown)
