"""Celery tasks of the agents app."""

from __future__ import annotations

from celery import shared_task

from agents.engine.recovery import turns_recover


@shared_task(name="agents.recover_turns")
def recover_turns() -> int:
    """Beat: finish turns cut off between LLM calls whose lease expired."""
    return turns_recover()  # each turn in its tenant's scope
