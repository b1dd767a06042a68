"""Agents, sessions (one agent talking with one end user) and their messages."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from agentplatform.core.tenancy import TenantOwned
from agentplatform.http.serializers import NO_NUL
from agents.cron import (
    CRON_HELP,
    CRON_MAX_LENGTH,
    TIMEZONE_MAX_LENGTH,
    validate_cron,
    validate_timezone,
)

MIN_CONTEXT_TOKENS = 256
MAX_CONTEXT_TOKENS = 1_000_000
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 90 * 86_400
MAX_ACTION_WAIT_SECONDS = 30 * 86_400
# `llm` as its OpenAPI schema says it (agents.api.serializers.LlmField): validate_llm
# accepts exactly what this describes, so a generated client sends what the server takes.
LLM_KEY_ENV_PATTERN = "^LLM_API_KEY_[A-Z0-9_]+$"
LLM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Empty for the platform's default model and endpoint.",
    "properties": {
        "model": {"type": "string", "maxLength": 200, "pattern": NO_NUL},
        "base_url": {
            "type": "string",
            "nullable": True,
            "pattern": "^https?://[^\\u0000]*$",
            "maxLength": 2000,
        },
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        # Only variables named for this: any other (SECRET_KEY, DATABASE_URL...) would be
        # sent to the tenant's base_url as its API key.
        "api_key_env": {"type": "string", "maxLength": 200, "pattern": LLM_KEY_ENV_PATTERN},
        "api_key_secret": {"type": "string", "maxLength": 100, "pattern": NO_NUL},
    },
    "additionalProperties": False,
}


def default_llm() -> dict[str, Any]:
    return {"model": "", "base_url": None}


def validate_llm(value: Any) -> None:
    """`llm` is `{"model", "base_url"}` plus optional generation settings; empty = defaults."""
    if not isinstance(value, dict):
        raise ValidationError("Must be an object like {'model': ..., 'base_url': ...}.")
    unknown = set(value) - set(LLM_SCHEMA["properties"])
    if unknown:
        raise ValidationError(f"Unknown keys: {', '.join(sorted(unknown))}.")
    errors = [
        f"{key}: {problem}"
        for key, schema in LLM_SCHEMA["properties"].items()
        if key in value and (problem := _llm_setting_problem(value[key], schema))
    ]
    if errors:
        raise ValidationError(errors)


def _llm_setting_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """Why `value` does not fit its LLM_SCHEMA entry (the few keywords that schema uses)."""
    if value is None:
        return None if schema.get("nullable") else "may not be null."
    kind = schema["type"]
    if isinstance(value, bool) or not isinstance(value, _JSON_TYPES[kind]):
        return f"must be {'an' if kind == 'integer' else 'a'} {kind}."
    if kind == "string":
        if len(value) > schema["maxLength"]:
            return f"must be at most {schema['maxLength']} characters."
        if "pattern" in schema and not re.match(schema["pattern"], value):
            return f"must match {schema['pattern']}."
        return None
    if not schema["minimum"] <= value <= schema["maximum"]:
        return f"must be between {schema['minimum']} and {schema['maximum']}."
    return None


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "number": (int, float),
    "integer": int,
}


class Agent(TenantOwned):
    class CheckpointPolicy(models.TextChoices):
        EVERY_LLM_CALL = "every_llm_call"
        EVERY_TURN = "every_turn"
        TRANSITIONS = "transitions"

    class DoubleTextPolicy(models.TextChoices):
        REJECT = "reject"
        ENQUEUE = "enqueue"
        INTERRUPT = "interrupt"
        ROLLBACK = "rollback"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True, default="")
    llm = models.JSONField(default=default_llm, blank=True, validators=[validate_llm])
    context_token_budget = models.PositiveIntegerField(
        default=4096,
        validators=[MinValueValidator(MIN_CONTEXT_TOKENS), MaxValueValidator(MAX_CONTEXT_TOKENS)],
    )
    working_memory_ttl_seconds = models.PositiveIntegerField(
        default=86_400,
        validators=[MinValueValidator(MIN_TTL_SECONDS), MaxValueValidator(MAX_TTL_SECONDS)],
    )
    checkpoint_policy = models.CharField(
        max_length=20, choices=CheckpointPolicy.choices, default=CheckpointPolicy.EVERY_TURN
    )
    # Names of the registered tools (AGENTS["TOOLS"]) this agent's LLM may call.
    tools = models.JSONField(default=list, blank=True)
    double_text_policy = models.CharField(
        max_length=20, choices=DoubleTextPolicy.choices, default=DoubleTextPolicy.ENQUEUE
    )
    # How long a run may wait for an approval or a client's tool output; then each pending
    # call gets an error result and the run is `expired`.
    action_timeout_seconds = models.PositiveIntegerField(
        default=86_400,
        validators=[MinValueValidator(MIN_TTL_SECONDS), MaxValueValidator(MAX_ACTION_WAIT_SECONDS)],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="agent_tenant_created")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(context_token_budget__gte=MIN_CONTEXT_TOKENS),
                name="agent_budget_min",
            ),
            models.CheckConstraint(
                condition=models.Q(working_memory_ttl_seconds__gte=MIN_TTL_SECONDS),
                name="agent_ttl_min",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Session(TenantOwned):
    class Status(models.TextChoices):
        ACTIVE = "active"
        CLOSED = "closed"
        ARCHIVED = "archived"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sessions")
    user_id = models.CharField(max_length=255, help_text="The tenant's own id for its end user.")
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The next message seq to hand out; bumped under the row lock so seqs never gap or repeat.
    next_seq = models.PositiveBigIntegerField(default=1)
    # Fencing token of the latest turn lease (unique per lease): a turn's writes check that it
    # is still theirs, so a holder that stalled past its lease can no longer write.
    lease_holder = models.UUIDField(null=True, blank=True, editable=False)
    # The turn key of a run waiting for an action (approval, a client's tool output): a new
    # message meets it when it claims the lease, and the double-text policy decides.
    awaiting_turn = models.CharField(max_length=64, blank=True, default="", editable=False)
    last_activity_at = models.DateTimeField(auto_now_add=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="session_tenant_created"),
            models.Index(fields=["tenant", "user_id"], name="session_tenant_user"),
            models.Index(fields=["agent", "-created_at"], name="session_agent_created"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} · {self.id}"


class Message(TenantOwned):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    class Status(models.TextChoices):
        ACTIVE = "active"
        ROLLED_BACK = "rolled_back"
        INTERRUPTED = "interrupted"  # a partial reply cut off by a newer message
        FAILED = "failed"  # a user message whose turn failed (e.g. the LLM endpoint broke)

    # No index of its own: message_unique_seq (session, seq) serves every lookup by session,
    # and each index is one more insert per message.
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    seq = models.PositiveBigIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="message_unique_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.role}"


class Run(TenantOwned):
    """One unit of the engine's work: a turn of a session, waited on by its caller or run in
    the background by a worker. A run that stops for a person or a program
    (`requires_action`) keeps its state in PostgreSQL only (the turn's open checkpoint and
    `required_action`), so it survives restarts and may wait for days."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        IN_PROGRESS = "in_progress"
        REQUIRES_ACTION = "requires_action"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    FINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.EXPIRED})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # run_session_created (session, -created_at) serves lookups by session.
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    background = models.BooleanField(default=False)
    content = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    # The turn's key: its frames, messages and checkpoints carry it, and running the run
    # again under it resumes the turn instead of starting another.
    turn_key = models.CharField(max_length=64)
    # While `requires_action`: {"tool_calls": [{"id", "name", "arguments", "decided_by"}]};
    # `action_results` collects the answers by tool call id until every call has one.
    required_action = models.JSONField(null=True, blank=True)
    action_results = models.JSONField(default=dict, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True)  # {"code", "detail"} when failed/cancelled
    user_message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assistant_message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)  # the end of an action's wait
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["session", "-created_at"], name="run_session_created"),
            models.Index(fields=["tenant", "-created_at"], name="run_tenant_created"),
            models.Index(fields=["session", "turn_key"], name="run_session_turn"),
            models.Index(
                fields=["expires_at"],
                name="run_waiting_expiry",
                condition=models.Q(status="requires_action"),
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"

    @property
    def final(self) -> bool:
        return self.status in self.FINAL


TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # what LLM APIs accept as a function name


class TenantTool(TenantOwned):
    """A tool a tenant defines through the API, beside the deployment's registered ones:
    `http` (the platform POSTs the arguments to the tenant's URL, signed), `client` (the
    run waits for the caller's output) or `mcp` (a tool of the tenant's MCP server). Agents
    list it by name in their `tools`."""

    class Kind(models.TextChoices):
        HTTP = "http"
        CLIENT = "client"
        MCP = "mcp"

    class ApprovalRule(models.TextChoices):
        NONE = "", "none"
        API = "api"
        OPERATOR = "operator"
        END_USER = "end_user"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    description = models.TextField(max_length=2000, blank=True, default="")
    parameters = models.JSONField(default=dict, blank=True)  # JSON Schema of the arguments
    kind = models.CharField(max_length=8, choices=Kind.choices)
    approval = models.CharField(
        max_length=16, choices=ApprovalRule.choices, blank=True, default=ApprovalRule.NONE
    )
    timeout_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(120)]
    )
    url = models.CharField(max_length=2048, blank=True, default="")  # http: endpoint; mcp: server
    remote_name = models.CharField(max_length=200, blank=True, default="")  # mcp: its own name
    # Header name -> the name of a tenant secret whose value is sent (never the value here).
    headers = models.JSONField(default=dict, blank=True)
    # http: the whsec_ signing secret, encrypted (agentplatform.core.vault's cipher).
    secret_ciphertext = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="tenant_tool_unique_name"),
            models.CheckConstraint(
                condition=models.Q(timeout_seconds__gte=1, timeout_seconds__lte=120),
                name="tenant_tool_timeout_range",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="tool_tenant_created")]

    def __str__(self) -> str:
        return self.name


class Schedule(TenantOwned):
    """A session's cron schedule: at each time its expression names (in its time zone) a
    background run of `content` starts on the session. Beat fires it through its own row,
    a django-celery-beat PeriodicTask (task `agents.schedule_fire`, the schedule's id as its
    argument) with its own CrontabSchedule, which the services keep in step with this row
    in the same transaction; the beat tables hold no tenant data beyond the expression."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(
        max_length=CRON_MAX_LENGTH, validators=[validate_cron], help_text=CRON_HELP
    )
    timezone = models.CharField(
        max_length=TIMEZONE_MAX_LENGTH,
        default="UTC",
        validators=[validate_timezone],
        help_text="The IANA time zone the expression is read in.",
    )
    content = models.TextField(help_text="The message each run starts with.")
    metadata = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    # PROTECT: the periodic task goes when the schedule goes (agents.schedules), not before.
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.PROTECT,
        editable=False,
        related_name="agent_schedule",
    )
    last_run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="+"
    )
    last_fired_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The Celery id of the message that fired last: a redelivered message starts no second run.
    last_fire_id = models.CharField(max_length=64, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["session", "-created_at"], name="schedule_session_created"),
            models.Index(fields=["tenant", "-created_at"], name="schedule_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"{self.cron} ({self.timezone}) · {self.session_id}"
