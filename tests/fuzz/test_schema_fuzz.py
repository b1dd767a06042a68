"""API fuzzing: schemathesis generates requests from /api/v1/schema/ and sends them, with a
valid key, to the application in-process.

Two runs. Every operation on its own (schemathesis's examples, coverage and fuzzing phases:
boundary values, each optional field present and absent, wrong types), and the stateful
phase: sequences of calls chained by the links schemathesis infers from the schema (create
an agent, open a session on it, post a message, read it back, delete it...). No answer may be
a 5xx, every answer must match the schema, data the schema calls valid must be accepted and
data it calls invalid refused. The fuzzing tenant's request budget is raised (Tenant.api_rate)
so that throttling does not answer in place of the operations.

FUZZ_EXAMPLES and FUZZ_SCENARIOS set the depth (`make fuzz` runs a longer one).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis
import schemathesis
from django.conf import settings as django_settings
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from agentplatform.core.audit import SYSTEM
from agentplatform.http.serializers import NUL_REFUSED
from agentplatform.models import (
    IdempotencyRecord,
    Tenant,
    TenantSecret,
    WebhookEndpoint,
    WebhookEvent,
)
from agents.api.serializers import UNKNOWN_TOOL
from agents.cron import CRON_INVALID, TIMEZONE_INVALID
from agents.llm.scripted import scripted_backend
from agents.models import Agent
from agents.services import agent_create, session_open
from memory.models import Memory
from tests.conftest import Persona, make_persona

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
SCENARIOS = int(os.environ.get("FUZZ_SCENARIOS", "40"))

WEBHOOK_URL_RULES = [
    "is not a public address.",
    "The URL is malformed.",
    "The URL has no host.",
    "must not contain credentials",
    "is not a valid host name.",
]
TOOL_RULES = [
    *WEBHOOK_URL_RULES,
    "The URL must start with http:// or https://.",
    "is longer than",
    "is not a valid host name.",
    "Not a valid JSON Schema",
    "A tool's parameters are a JSON Schema of an object",
    "A client tool is run by the caller",
    "tool needs the URL the platform calls",
    "cannot be set.",
    "No secret named",
    "is the name of a platform tool.",
    # An mcp tool: its server is listed when it is saved (the fuzzer's URLs lead nowhere).
    "Only an mcp tool has a remote name.",
    "The MCP server's tools could not be listed",
    "The MCP server has no tool",
    "The MCP server's schema is not usable",
]
# Rules OpenAPI 3.0 cannot state. The server refuses such data with a 422 naming the rule;
# that answer, and only it, is excused from "data the schema calls valid is accepted".
UNSTATABLE_RULES = {
    # A JSON object's nested strings cannot be constrained by a schema of any object.
    "*": [NUL_REFUSED],
    "POST /api/v1/invoke/": ["The last message must be the user's."],
    # A webhook URL's host: not an internal address, a valid name (checked by url_check).
    "POST /api/v1/webhooks/": WEBHOOK_URL_RULES,
    "PATCH /api/v1/webhooks/{id}/": WEBHOOK_URL_RULES,
    # Tool names an agent lists exist for its tenant; a tool's URL, schema and secrets.
    "POST /api/v1/agents/": [UNKNOWN_TOOL],
    "PATCH /api/v1/agents/{id}/": [UNKNOWN_TOOL],
    "POST /api/v1/tools/": TOOL_RULES,
    "PATCH /api/v1/tools/{id}/": TOOL_RULES,
    # A cron field's range (minute 0-59, ...) and which time zone names exist: the
    # patterns state only their form.
    "POST /api/v1/sessions/{session_pk}/schedules/": [CRON_INVALID, TIMEZONE_INVALID],
    "PATCH /api/v1/schedules/{id}/": [CRON_INVALID, TIMEZONE_INVALID],
    "POST /api/v1/tools/{id}/refresh/": [*TOOL_RULES, "Only an mcp tool is described by"],
}


def valid_data_accepted(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    rules = [*UNSTATABLE_RULES["*"], *UNSTATABLE_RULES.get(case.operation.label, [])]
    if response.status_code == 422 and any(rule in response.text for rule in rules):
        return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    valid_data_accepted,
    negative_data_rejection,
]

schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
# Unknown query parameters are ignored, as HTTP APIs do (a client's cache-buster must not
# break it): they are not invalid data.
schema.config.generation.update(allow_extra_parameters=False)
# A body over DATA_UPLOAD_MAX_MEMORY_SIZE is refused with 413 before it is parsed.
rejection = schema.config.checks.negative_data_rejection
rejection.expected_statuses = [*rejection.expected_statuses, "413"]


@pytest.fixture
def persona(transactional_db: None) -> Persona:
    scripted_backend.reset()
    persona = make_persona("fuzz")
    persona.tenant.api_rate = "1000000/min"
    persona.tenant.save(update_fields=["api_rate"])
    return persona


@pytest.fixture
def api_key(persona: Persona) -> str:
    return persona.api_key


def _reset(tenant: Tenant) -> None:
    """The tenant as it was created: one agent with one session, nothing else. Each call
    sequence starts here, so that the same sequence meets the same state (Hypothesis replays
    sequences and refuses ones whose steps became possible or impossible in between)."""
    for model in (Agent, Memory, TenantSecret, IdempotencyRecord, WebhookEndpoint, WebhookEvent):
        model.objects.filter(tenant=tenant).delete()
    redis.Redis.from_url(django_settings.REDIS_URL).flushdb()
    agent = agent_create(actor=SYSTEM, tenant=tenant, name="fuzz agent", system_prompt="Hi.")
    session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id="fuzz-user-1")


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
def test_every_operation_answers_within_its_schema(case: schemathesis.Case, api_key: str) -> None:
    case.call_and_validate(headers=_auth(api_key), checks=CHECKS)


@pytest.mark.django_db(transaction=True)
def test_call_sequences_answer_within_the_schema(persona: Persona, api_key: str) -> None:
    class Sequences(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            _reset(persona.tenant)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": _auth(api_key)}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Sequences.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )
