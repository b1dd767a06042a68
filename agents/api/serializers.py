from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone as django_timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agentplatform.http.principal import request_tenant
from agentplatform.http.serializers import (
    JSONObjectField,
    StrictBooleanField,
    StrictCharField,
    StrictModelSerializer,
    StrictSerializer,
    StrictSlugField,
    validate_metadata,
)
from agents.cron import (
    CRON_HELP,
    CRON_MAX_LENGTH,
    CRON_PATTERN,
    TIMEZONE_MAX_LENGTH,
    TIMEZONE_PATTERN,
    next_fire,
    validate_cron,
    validate_timezone,
)
from agents.models import (
    LLM_SCHEMA,
    Agent,
    Message,
    Run,
    Schedule,
    Session,
    TenantTool,
    validate_llm,
)
from agents.tenant_tools import tool_names_unknown

if TYPE_CHECKING:
    from agents.engine.turn import TurnResult
    from agents.llm.base import Usage

MAX_AGENT_TOOLS = 64
MAX_TOOL_HEADERS = 20
TOOL_KINDS = [TenantTool.Kind.HTTP, TenantTool.Kind.CLIENT, TenantTool.Kind.MCP]
UNKNOWN_TOOL = "not a registered tool nor one of this tenant's tools."


@extend_schema_field(LLM_SCHEMA)
class LlmField(serializers.JSONField):
    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        try:
            validate_llm(value)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None
        return value


class AgentSerializer(StrictModelSerializer):
    llm = LlmField(required=False)

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "system_prompt",
            "llm",
            "context_token_budget",
            "working_memory_ttl_seconds",
            "checkpoint_policy",
            "double_text_policy",
            "action_timeout_seconds",
            "tools",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    tools = serializers.ListField(
        child=StrictSlugField(max_length=64),
        required=False,
        max_length=MAX_AGENT_TOOLS,
        help_text="Names of the tools it may call: the deployment's registered tools "
        "and the tenant's own (/tools/).",
    )

    def validate_tools(self, names: list[str]) -> list[str]:
        tenant = request_tenant(self.context["request"])
        unknown = tool_names_unknown(tenant_id=tenant.pk, names=names)
        if unknown:
            raise serializers.ValidationError(f"{', '.join(unknown)}: {UNKNOWN_TOOL}")
        return list(dict.fromkeys(names))  # each once, in order


class SessionSerializer(StrictModelSerializer):
    agent = serializers.UUIDField()
    user_id = StrictCharField(min_length=1, max_length=255)
    metadata = JSONObjectField(required=False)

    class Meta:
        model = Session
        fields = ["id", "agent", "user_id", "metadata", "status", "last_activity_at", "created_at"]
        read_only_fields = ["id", "status", "last_activity_at", "created_at"]

    def to_representation(self, instance: Session) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["agent"] = str(instance.agent_id)
        return data


class SessionFiltersSerializer(serializers.Serializer):
    agent = serializers.UUIDField(required=False, help_text="Only this agent's.")
    user_id = StrictCharField(max_length=255, required=False, help_text="Only this end user's.")
    status = serializers.ChoiceField(choices=Session.Status.choices, required=False)


class MessageSerializer(serializers.Serializer):
    """Output only. A plain Serializer: on every turn's response, ModelSerializer's field
    introspection alone cost ~1.5 ms (bench/turn_overhead.py)."""

    id = serializers.IntegerField(read_only=True)
    seq = serializers.IntegerField(read_only=True)
    role = serializers.ChoiceField(choices=Message.Role.choices, read_only=True)
    content = serializers.CharField(read_only=True)
    token_count = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(choices=Message.Status.choices, read_only=True)
    metadata = JSONObjectField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


MAX_CONTENT_CHARS = 32_000
MAX_CLIENT_MESSAGE_ID_CHARS = 100


class MessageCreateSerializer(StrictSerializer):
    content = StrictCharField(max_length=MAX_CONTENT_CHARS)
    client_message_id = StrictCharField(max_length=MAX_CLIENT_MESSAGE_ID_CHARS, required=False)
    metadata = JSONObjectField(required=False)


def message_create_data(data: Any) -> dict[str, Any]:
    """`MessageCreateSerializer(data=data)`'s validated data; raises its ValidationError.

    Every REST turn validates its body here. A body the serializer would accept as it is
    (the common case) is checked directly, which is ~25x fewer Python calls than building the
    serializer (DRF deep-copies its declared fields per instance) and running its fields'
    validators. Anything else, including every invalid body, goes through the serializer, so
    each error body is the serializer's own."""
    fast = _message_create_fast(data)
    if fast is not None:
        return fast
    serializer = MessageCreateSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _message_create_fast(data: Any) -> dict[str, Any] | None:
    """The validated data of a body that passes every check of MessageCreateSerializer,
    with its keys in the serializer's field order; None when any check fails or is unsure."""
    if type(data) is not dict or not data.keys() <= _MESSAGE_CREATE_FIELDS:
        return None
    if not _plain_text(data.get("content"), MAX_CONTENT_CHARS):
        return None
    validated = {"content": data["content"]}
    if "client_message_id" in data:
        if not _plain_text(data["client_message_id"], MAX_CLIENT_MESSAGE_ID_CHARS):
            return None
        validated["client_message_id"] = data["client_message_id"]
    if "metadata" in data:
        if not _valid_metadata(data["metadata"]):
            return None
        validated["metadata"] = data["metadata"]
    return validated


_MESSAGE_CREATE_FIELDS = frozenset(MessageCreateSerializer._declared_fields)


def _plain_text(value: Any, max_length: int) -> bool:
    """What StrictCharField and DRF's CharField validators accept: a string, not blank nor
    whitespace alone, within max_length, without NUL or surrogate characters (a string with
    a surrogate code point is exactly one that UTF-8 cannot encode)."""
    if type(value) is not str or len(value) > max_length or not value.strip():
        return False
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _valid_metadata(value: Any) -> bool:
    """What JSONObjectField accepts: a JSON-encodable object passing validate_metadata."""
    if type(value) is not dict:
        return False
    try:
        validate_metadata(value)
    except (serializers.ValidationError, TypeError, ValueError):
        return False
    return True


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()


class TurnResultSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(
        choices=["completed", "interrupted", "rolled_back", "cancelled", "requires_action"]
    )
    run = serializers.UUIDField(source="run.pk", allow_null=True, default=None)
    required_action = serializers.SerializerMethodField()
    user_message = MessageSerializer()
    assistant_message = MessageSerializer(allow_null=True)
    checkpoint = serializers.UUIDField(allow_null=True, source="checkpoint.id", default=None)
    usage = UsageSerializer(allow_null=True)
    context_tokens = serializers.IntegerField()
    timings = serializers.SerializerMethodField()

    @extend_schema_field(
        {"type": "object", "nullable": True, "description": "The run's pending tool calls."}
    )
    def get_required_action(self, result: Any) -> dict[str, Any] | None:
        return _required_action(result)

    def get_timings(self, result: Any) -> dict[str, float]:
        return _timings(result)


def _required_action(result: TurnResult) -> dict[str, Any] | None:
    return None if result.required_action is None else {"tool_calls": result.required_action}


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


def _timings(result: TurnResult) -> dict[str, float]:
    """Where the turn's time went: waiting for the LLM, and everything else."""
    return {
        "llm_ms": round(result.llm_seconds * 1000, 3),
        "platform_ms": round(result.platform_seconds * 1000, 3),
    }


# Built by hand on the turn path: DRF's serializers deep-copy their declared fields on every
# instance, and a turn's body holds three (the result, two messages): ~0.35 ms per REST turn
# (bench/turn_overhead.py). The serializers above stay the schema's description of the same
# body; tests/agents/test_messages_api.py keeps the two equal.
_DATETIME = serializers.DateTimeField()  # DRF's format (ISO 8601, "Z" for UTC) exactly


def message_body(message: Message) -> dict[str, Any]:
    """`MessageSerializer(message).data`, built directly."""
    return {
        "id": message.id,
        "seq": message.seq,
        "role": str(message.role),
        "content": message.content,
        "token_count": message.token_count,
        "status": str(message.status),
        "metadata": message.metadata,
        "created_at": _DATETIME.to_representation(message.created_at),
    }


def turn_result_body(result: TurnResult) -> dict[str, Any]:
    """`TurnResultSerializer(result).data`, built directly."""
    assistant, usage = result.assistant_message, result.usage
    return {
        "outcome": result.outcome,
        "run": None if result.run is None else str(result.run.pk),
        "required_action": _required_action(result),
        "user_message": message_body(result.user_message),
        "assistant_message": None if assistant is None else message_body(assistant),
        "checkpoint": None if result.checkpoint is None else str(result.checkpoint.id),
        "usage": None if usage is None else _usage(usage),
        "context_tokens": result.context_tokens,
        "timings": _timings(result),
    }


class InvokeMessageSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = StrictCharField(max_length=32_000)


MAX_INVOKE_MESSAGES = 500


class InvokeSerializer(StrictSerializer):
    agent = serializers.UUIDField()
    # min_length/max_length: DRF's list serializers have them, its type stubs do not.
    messages = InvokeMessageSerializer(
        many=True,
        min_length=1,  # type: ignore[call-arg]
        max_length=MAX_INVOKE_MESSAGES,
    )
    user_config = JSONObjectField(required=False)
    task_state = JSONObjectField(required=False)

    def validate_messages(self, value: list[dict[str, str]]) -> list[dict[str, str]]:
        if value[-1]["role"] != "user":
            raise serializers.ValidationError("The last message must be the user's.")
        return value


class InvokeResultSerializer(serializers.Serializer):
    message = InvokeMessageSerializer()
    messages = InvokeMessageSerializer(many=True)
    task_state = JSONObjectField()
    usage = UsageSerializer(allow_null=True)


class ClientTokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)
    session = serializers.UUIDField(source="session_id", read_only=True)
    expires_at = serializers.DateTimeField(read_only=True)
    websocket_path = serializers.SerializerMethodField()

    def get_websocket_path(self, minted: Any) -> str:
        return f"/ws/sessions/{minted.session_id}/?token={minted.token}"


class SecretSerializer(StrictSerializer):
    """A tenant secret: the value is write-only and never returned."""

    name = StrictSlugField(max_length=100)
    value = StrictCharField(write_only=True, max_length=4096)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class RunCreateSerializer(StrictSerializer):
    content = StrictCharField(max_length=32_000)
    background = serializers.BooleanField(
        default=False,
        help_text="Answer 202 at once and let a worker run it; else wait for the run's end.",
    )
    metadata = JSONObjectField(required=False)


class RunFiltersSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Run.Status.choices, required=False)


class PendingCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    arguments = JSONObjectField()
    kind = serializers.ChoiceField(choices=["python", "http", "client", "mcp"])
    approval = serializers.ChoiceField(
        choices=["", "api", "operator", "end_user"],
        help_text="Who decides: the API, an operator, the end user; empty for client tools.",
    )


class RequiredActionSerializer(serializers.Serializer):
    tool_calls = PendingCallSerializer(many=True)


class RunErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class RunSerializer(serializers.Serializer):
    """Output only: a run's state (plain Serializer: it is on every run's response)."""

    id = serializers.UUIDField(read_only=True)
    session = serializers.UUIDField(source="session_id", read_only=True)
    status = serializers.ChoiceField(choices=Run.Status.choices, read_only=True)
    background = serializers.BooleanField(read_only=True)
    content = serializers.CharField(read_only=True)
    metadata = JSONObjectField(read_only=True)
    required_action = RequiredActionSerializer(read_only=True, allow_null=True)
    answered = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    error = RunErrorSerializer(read_only=True, allow_null=True)
    user_message = serializers.IntegerField(
        source="user_message_id", read_only=True, allow_null=True
    )
    assistant_message = serializers.IntegerField(
        source="assistant_message_id", read_only=True, allow_null=True
    )
    cancel_requested_at = serializers.DateTimeField(read_only=True, allow_null=True)
    expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)

    @extend_schema_field(
        {
            "type": "object",
            "description": "Who answered each pending call so far: by tool call id.",
            "additionalProperties": {"type": "object"},
        }
    )
    def get_answered(self, run: Run) -> dict[str, Any]:
        # Who answered and how; a client tool's output stays out of listings.
        return {
            call_id: {key: value for key, value in answer.items() if key != "output"}
            for call_id, answer in (run.action_results or {}).items()
        }

    @extend_schema_field(UsageSerializer(allow_null=True))
    def get_usage(self, run: Run) -> dict[str, int] | None:
        return run.usage or None  # None until an LLM call reported its tokens


class RunDetailSerializer(RunSerializer):
    messages = serializers.SerializerMethodField()

    @extend_schema_field(MessageSerializer(many=True))
    def get_messages(self, run: Run) -> list[dict[str, Any]]:
        """What the run wrote: its user message, tool calls and results, and reply."""
        return list(MessageSerializer(self.context.get("messages", []), many=True).data)


class ToolOutputSerializer(StrictSerializer):
    tool_call_id = StrictCharField(max_length=200)
    output = serializers.JSONField(help_text="The client tool's result, any JSON.")


class DecisionSerializer(StrictSerializer):
    tool_call_id = StrictCharField(max_length=200)
    approve = serializers.BooleanField()
    reason = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")


MAX_ACTIONS = 100


class RunActionsSerializer(StrictSerializer):
    tool_outputs = ToolOutputSerializer(
        many=True,
        required=False,
        max_length=MAX_ACTIONS,  # type: ignore[call-arg]
    )
    decisions = DecisionSerializer(
        many=True,
        required=False,
        max_length=MAX_ACTIONS,  # type: ignore[call-arg]
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("tool_outputs") and not attrs.get("decisions"):
            raise serializers.ValidationError("Send tool_outputs or decisions (or both).")
        return attrs


class ToolSerializer(StrictModelSerializer):
    """A tenant's own tool. `headers` maps header names to the names of the tenant's
    secrets (POST /secrets/), whose values are sent; no value is ever shown."""

    name = StrictSlugField(max_length=64)
    kind = serializers.ChoiceField(
        choices=TOOL_KINDS,
        help_text="http: the platform POSTs each call to `url`, signed; client: the caller "
        "runs it and sends the output (POST /runs/{id}/actions/); mcp: the tool `remote_name` "
        "of the MCP server at `url` (streamable HTTP), listed when saved.",
    )
    parameters = JSONObjectField(
        required=False,
        help_text="JSON Schema of the arguments. An mcp tool without one takes its server's.",
    )
    url = StrictCharField(max_length=2048, required=False, allow_blank=True)
    remote_name = StrictCharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="mcp: the tool's name on the server (default: `name`).",
    )
    headers = serializers.DictField(child=StrictCharField(max_length=100), required=False)
    description = StrictCharField(
        max_length=2000,
        required=False,
        allow_blank=True,
        help_text="What the LLM is told the tool does. An mcp tool without one takes its server's.",
    )

    def validate_headers(self, headers: dict[str, str]) -> dict[str, str]:
        if len(headers) > MAX_TOOL_HEADERS:
            raise serializers.ValidationError(f"At most {MAX_TOOL_HEADERS} headers.")
        return headers

    class Meta:
        model = TenantTool
        fields = [
            "id", "name", "description", "parameters", "kind", "approval", "timeout_seconds",
            "url", "remote_name", "headers", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]


class ToolUpdateSerializer(ToolSerializer):
    # Fixed once created: agents refer to the name, and the kind decides the rest.
    name = StrictSlugField(read_only=True)
    kind = serializers.ChoiceField(choices=TOOL_KINDS, read_only=True)

    class Meta(ToolSerializer.Meta):
        read_only_fields = ["id", "name", "kind", "created_at", "updated_at"]


class ToolCreatedSerializer(ToolSerializer):
    secret = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="An http tool's signing secret (whsec_...), shown this once: verify the "
        "webhook-signature header of each call with it.",
    )

    class Meta(ToolSerializer.Meta):
        fields = [*ToolSerializer.Meta.fields, "secret"]


@extend_schema_field(
    {
        "type": "string",
        "pattern": CRON_PATTERN,
        "maxLength": CRON_MAX_LENGTH,
        "description": CRON_HELP,
        "example": "0 9 * * mon-fri",
    }
)
class CronField(StrictCharField):
    """A five-field cron expression: the schema states its form; validate_cron the ranges."""


@extend_schema_field(
    {
        "type": "string",
        "pattern": TIMEZONE_PATTERN,
        "maxLength": TIMEZONE_MAX_LENGTH,
        "example": "Europe/Lisbon",
    }
)
class TimeZoneField(StrictCharField):
    """An IANA time zone name: the schema states its form; validate_timezone that this
    deployment knows it (as an enum, the ~600 names were half of the whole schema)."""


class ScheduleSerializer(StrictSerializer):
    id = serializers.UUIDField(read_only=True)
    session = serializers.UUIDField(source="session_id", read_only=True)
    cron = CronField(max_length=CRON_MAX_LENGTH, validators=[validate_cron])
    timezone = TimeZoneField(
        max_length=TIMEZONE_MAX_LENGTH,
        validators=[validate_timezone],
        default="UTC",
        help_text="The IANA time zone the expression is read in (daylight saving included).",
    )
    content = StrictCharField(max_length=32_000, help_text="The message each run starts with.")
    metadata = JSONObjectField(
        required=False,
        help_text="Given to each run (with `schedule`: this schedule's id, added).",
    )
    enabled = StrictBooleanField(default=True)
    next_run_at = serializers.SerializerMethodField(
        help_text="When the next run starts (null while disabled)."
    )
    last_run = serializers.UUIDField(source="last_run_id", read_only=True, allow_null=True)
    last_fired_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    @extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
    def get_next_run_at(self, schedule: Schedule) -> str | None:
        if not schedule.enabled:
            return None
        when = next_fire(schedule.cron, schedule.timezone, now=django_timezone.now())
        return str(serializers.DateTimeField().to_representation(when))
