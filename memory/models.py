"""Memory tiers in PostgreSQL: checkpoints, episodic summaries, semantic memories."""

from __future__ import annotations

import uuid

from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import RangeOperators
from django.db import models
from django.db.models import Func
from pgvector.django import HnswIndex, VectorField

from agentplatform.core.tenancy import TenantOwned
from agents.engine.ports import CheckpointKind


class Checkpoint(TenantOwned):
    """A point in a session's history to resume from, roll back to, or fork from.

    Messages are never copied in: a checkpoint refers to them by `high_water_seq` and to its
    working memory by the seq range it held, so storage grows linearly with turns.
    """

    class Kind(models.TextChoices):  # the engine's kinds (agents.engine.ports.CheckpointKind)
        LLM_CALL = CheckpointKind.LLM_CALL
        TURN = CheckpointKind.TURN
        TRANSITION = CheckpointKind.TRANSITION
        MANUAL = CheckpointKind.MANUAL

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # checkpoint_session_created (session, -created_at) serves lookups by session.
    session = models.ForeignKey(
        "agents.Session", on_delete=models.CASCADE, related_name="checkpoints", db_index=False
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    high_water_seq = models.PositiveBigIntegerField()
    # Working memory as references: the seqs it held (first..last) and their token total.
    memory_first_seq = models.PositiveBigIntegerField(null=True)
    memory_tokens = models.PositiveIntegerField(default=0)
    task_state = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Tool calls run since the previous checkpoint: name, arguments, idempotency key, result.
    side_effects = models.JSONField(default=list, blank=True)
    # The turn that wrote it, and whether that turn still had LLM calls to make (a turn cut
    # off there resumes from this checkpoint).
    turn_key = models.CharField(max_length=64, blank=True, default="")
    turn_open = models.BooleanField(default=False)
    turn_first_seq = models.PositiveBigIntegerField(null=True, blank=True)  # its user message
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["session", "-created_at"], name="checkpoint_session_created"),
            models.Index(
                fields=["session", "turn_key"],
                name="checkpoint_turn",
                condition=~models.Q(turn_key=""),
            ),
            # The recovery task's scan: only turns cut off mid-way are in it.
            models.Index(
                fields=["created_at"],
                name="checkpoint_open_turns",
                condition=models.Q(turn_open=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.session_id}#{self.high_water_seq}"


class Memory(TenantOwned):
    """A fact or preference about one end user, similarity-searched per end user.

    Writes deduplicate: a near-identical statement updates the existing row and adds its
    source, so `sources` says every place the platform learned it (why the agent believes
    it). Retracted memories (by a rollback or an operator) stay for the audit trail but are
    never retrieved.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        RETRACTED = "retracted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user_id = models.CharField(max_length=255)
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="memories"
    )
    text = models.TextField()
    embedding = VectorField(dimensions=384)
    embedding_model = models.CharField(max_length=100)
    # [{"kind": "message" | "api" | "operator", "message_id", "session_id", "author", "at"}]
    sources = models.JSONField(default=list)
    author = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_retrieved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "memories"
        indexes = [
            # Filtered searches scan one end user's rows exactly through this index.
            models.Index(fields=["tenant", "user_id", "status"], name="memory_tenant_user"),
            HnswIndex(
                name="memory_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return self.text[:60]


class Summary(TenantOwned):
    """A summary of a contiguous range of one session's messages (`first_seq`..`last_seq`).

    Ranges of one kind never overlap in a session: the database refuses it (an exclusion
    constraint over int8range). The source messages stay where they are.
    """

    class Kind(models.TextChoices):
        COMPACTION = "compaction"  # older messages that fell out of working memory
        SESSION = "session"  # the whole session, written when it goes idle or closes

    class Method(models.TextChoices):
        LLM = "llm"
        EXTRACTIVE = "extractive"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(
        "agents.Session", on_delete=models.CASCADE, related_name="summaries"
    )
    user_id = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    first_seq = models.PositiveBigIntegerField()
    last_seq = models.PositiveBigIntegerField()
    text = models.TextField()
    method = models.CharField(max_length=16, choices=Method.choices)
    model = models.CharField(max_length=100, blank=True, default="")
    prompt_version = models.CharField(max_length=20)
    source_tokens = models.PositiveIntegerField()
    summary_tokens = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "summaries"
        indexes = [
            models.Index(fields=["tenant", "user_id", "-created_at"], name="summary_user_recent"),
            models.Index(fields=["session", "kind", "first_seq"], name="summary_session_range"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(first_seq__lte=models.F("last_seq")), name="summary_range_order"
            ),
            models.CheckConstraint(condition=~models.Q(text=""), name="summary_not_empty"),
            ExclusionConstraint(
                name="summary_ranges_disjoint",
                expressions=[
                    ("session", RangeOperators.EQUAL),
                    ("kind", RangeOperators.EQUAL),
                    (
                        Func(
                            models.F("first_seq"),
                            models.F("last_seq"),
                            models.Value("[]"),
                            function="int8range",
                        ),
                        RangeOperators.OVERLAPS,
                    ),
                ],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.session_id} {self.first_seq}-{self.last_seq}"


# --- LangGraph graphs' checkpoints (memory/langgraph_saver.py) ------------------------------
# The saver mirrors LangGraph's own layout: a checkpoint row without its channel values, each
# channel value stored once per version (unchanged channels are not copied again), and the
# pending writes of each checkpoint. Every row belongs to a tenant.


class GraphCheckpoint(TenantOwned):
    thread_id = models.CharField(max_length=255)
    checkpoint_ns = models.CharField(max_length=255, blank=True, default="")
    checkpoint_id = models.CharField(max_length=64)
    parent_checkpoint_id = models.CharField(max_length=64, blank=True, default="")
    type = models.CharField(max_length=32)
    checkpoint = models.BinaryField()
    metadata_type = models.CharField(max_length=32)
    metadata = models.BinaryField()
    channel_versions = models.JSONField(default=dict)
    run_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "thread_id", "checkpoint_ns", "checkpoint_id"],
                name="graph_checkpoint_unique",
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "run_id"], name="graph_checkpoint_run"),
        ]


class GraphBlob(TenantOwned):
    thread_id = models.CharField(max_length=255)
    checkpoint_ns = models.CharField(max_length=255, blank=True, default="")
    channel = models.CharField(max_length=255)
    version = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    blob = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "thread_id", "checkpoint_ns", "channel", "version"],
                name="graph_blob_unique",
            )
        ]


class GraphWrite(TenantOwned):
    thread_id = models.CharField(max_length=255)
    checkpoint_ns = models.CharField(max_length=255, blank=True, default="")
    checkpoint_id = models.CharField(max_length=64)
    task_id = models.CharField(max_length=255)
    task_path = models.CharField(max_length=1024, blank=True, default="")
    idx = models.IntegerField()
    channel = models.CharField(max_length=255)
    type = models.CharField(max_length=32)
    blob = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"],
                name="graph_write_unique",
            )
        ]


class RetentionPolicy(TenantOwned):
    """How long each kind of state is kept: the tenant's default (no agent) or an agent's
    override, field by field (an empty field falls back to the tenant's default).
    Enforced daily by Celery beat (memory/retention.py); each run is audited."""

    agent = models.OneToOneField(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="retention"
    )
    working_memory_ttl_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Applied to the agents' working memory in Redis."
    )
    idle_session_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Sessions idle this long are summarised, then archived."
    )
    message_retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Raw messages older than this are deleted; summaries stay."
    )
    checkpoint_keep_last = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Per session, keep this many latest checkpoints and one a day before them.",
    )
    memory_retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Memories neither updated nor retrieved for this long."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "retention policies"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(agent__isnull=True),
                name="retention_one_default_per_tenant",
            )
        ]

    def __str__(self) -> str:
        return f"retention of {self.agent or 'every agent'}"


class StorageSample(TenantOwned):
    """Rows and bytes one tenant keeps in one store, sampled daily (memory/accounting.py)."""

    taken_on = models.DateField()
    store = models.CharField(max_length=32)
    rows = models.BigIntegerField()
    bytes = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "taken_on", "store"], name="storage_sample_unique"
            )
        ]
        indexes = [models.Index(fields=["tenant", "taken_on"], name="storage_sample_recent")]
