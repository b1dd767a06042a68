"""Memory tiers: checkpoints (and, later, summaries and semantic memories)."""

from __future__ import annotations

import uuid

from django.db import models

from agentplatform.tenancy import TenantOwned


class Checkpoint(TenantOwned):
    """A point in a session's history to resume from, roll back to, or fork from.

    Messages are never copied in: a checkpoint refers to them by `high_water_seq` and to its
    working memory by the seq range it held, so storage grows linearly with turns.
    """

    class Kind(models.TextChoices):
        LLM_CALL = "llm_call"
        TURN = "turn"
        TRANSITION = "transition"
        MANUAL = "manual"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(
        "agents.Session", on_delete=models.CASCADE, related_name="checkpoints"
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    high_water_seq = models.PositiveBigIntegerField()
    # Working memory as references: the seqs it held (first..last) and their token total.
    memory_first_seq = models.PositiveBigIntegerField(null=True)
    memory_tokens = models.PositiveIntegerField(default=0)
    task_state = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["session", "-created_at"], name="checkpoint_session_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.session_id}#{self.high_water_seq}"
