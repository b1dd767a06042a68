"""Services own their audit events: every write service of the service modules records
exactly one event for its action (or says why it records none); transports only call them."""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentplatform.core.audit import AUDITED, UNAUDITED, Actor
from agentplatform.core.services import (
    admin_object_delete,
    admin_object_save,
    api_key_create,
    api_key_revoke,
    operator_ensure,
    tenant_create,
)
from agentplatform.core.vault import secret_delete, secret_set
from agentplatform.core.webhooks import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_disable,
    webhook_endpoint_update,
    webhook_secret_rotate,
)
from agentplatform.devtools.testing import ROOT
from agentplatform.models import ApiKey, AuditEvent, Membership, TenantSecret, WebhookEndpoint
from agents.engine.turn import turn_run
from agents.models import Run, Schedule, TenantTool
from agents.runs import Answer, run_act, run_cancel, run_create
from agents.schedules import schedule_create, schedule_delete, schedule_update
from agents.services import agent_create, agent_delete, agent_update, session_delete, session_open
from agents.tenant_tools import ToolSpec, tool_create, tool_delete, tool_update
from memory.checkpoints import checkpoint_fork, checkpoint_rollback
from memory.erasure import user_erase
from memory.models import Checkpoint, Memory, RetentionPolicy
from memory.retention import retention_enforce
from memory.semantic import Source, memory_delete, memory_upsert
from tests.conftest import Persona

pytestmark = pytest.mark.django_db

SERVICE_MODULES = [
    "agentplatform.core.services",
    "agentplatform.core.vault",
    "agentplatform.core.webhooks",
    "agentplatform.core.webhook_delivery",
    "agents.services",
    "agents.runs",
    "agents.tenant_tools",
    "agents.schedules",
    "memory.semantic",
    "memory.checkpoints",
    "memory.erasure",
    "memory.retention",
    "memory.summaries",
    "memory.accounting",
    "memory.learning",
]
# Public functions of those modules that write nothing (reads, pure helpers).
READS = {
    "listening_probe",  # builds SQL, runs none
    "signing_secret_new",  # makes a secret, stores nothing
    "tool_list",
    "tool_names_unknown",
    "agent_tools",
    "schema_problem",
    "api_key_authenticate",  # touches last_used_at, a hint for operators, not a change
    "secret_value",
    "memory_search",
    "vector_literal",
    "side_effects_after",
    "policy_with",
    "policy_effective",
    "policy_sessions",
    "retention_preview",
    "extractive_summary",
    "compaction_range",
    "storage_usage",
    "facts_of",
    "webhook_settings",
    "signing_secrets",
    "previous_secret_expiry",
    "event_id_new",
    "webhook_endpoint_list",
    "access_webhook_endpoint",
    "webhook_delivery_list",
    "access_webhook_delivery",
    "retry_delay",
    "deliveries_due",
}
ACTOR = Actor("operator", "audit-test")


def _public_functions() -> dict[str, Callable[..., Any]]:
    found = {}
    for name in SERVICE_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            public = "_" in attr and not attr.startswith("_") and attr.islower()
            if inspect.isfunction(value) and value.__module__ == name and public:
                found[attr] = inspect.unwrap(value)
    return found


def test_every_write_service_is_audited_or_says_why_not() -> None:
    audited = {inspect.unwrap(service) for service in AUDITED.values()}
    exempt = {inspect.unwrap(service) for service in UNAUDITED}
    unclassified = [
        name
        for name, function in _public_functions().items()
        if function not in audited and function not in exempt and name not in READS
    ]
    assert unclassified == []
    assert all(reason.strip() for reason in UNAUDITED.values())


def _rollback_case(alice: Persona) -> None:
    checkpoint = Checkpoint.objects.filter(session=alice.session).order_by("created_at").first()
    assert checkpoint is not None
    checkpoint_rollback(session=alice.session, checkpoint=checkpoint, actor=ACTOR)


def _fork_case(alice: Persona) -> None:
    checkpoint = Checkpoint.objects.filter(session=alice.session).first()
    assert checkpoint is not None
    checkpoint_fork(session=alice.session, checkpoint=checkpoint, actor=ACTOR)


def _memory(alice: Persona, text: str = "The user likes tea.") -> Any:
    return memory_upsert(
        tenant=alice.tenant, user_id="u1", text=text, source=Source("api"), actor=ACTOR
    )[0]


def _second_source(alice: Persona) -> None:
    memory_upsert(
        tenant=alice.tenant,
        user_id="u1",
        text="The user likes tea.",
        source=Source("operator", author="op"),
        actor=ACTOR,
    )


def _operator(alice: Persona) -> None:
    operator_ensure(
        tenant=alice.tenant,
        username="audit-op",
        password="pw",
        role=Membership.Role.VIEWER,
        actor=ACTOR,
    )


def _tool(alice: Persona) -> Any:
    found = TenantTool.objects.filter(tenant=alice.tenant).first()
    if found is not None:
        return found
    return tool_create(tenant=alice.tenant, spec=ToolSpec("pick", "client"), actor=ACTOR)[0]


def _waiting_run(alice: Persona) -> None:
    call = {"id": "c1", "name": "refund", "arguments": {}, "kind": "python", "approval": "api"}
    run_create(session=alice.session, content="refund it")
    Run.objects.filter(session=alice.session).update(
        status=Run.Status.REQUIRES_ACTION, required_action={"tool_calls": [call]}
    )


def _webhook(alice: Persona) -> WebhookEndpoint:
    found = WebhookEndpoint.objects.filter(tenant=alice.tenant).first()
    if found is not None:
        return found
    return webhook_endpoint_create(
        tenant=alice.tenant, url="https://hooks.example/in", events=["run.completed"], actor=ACTOR
    )[0]


def _schedule(alice: Persona) -> Schedule:
    found = Schedule.objects.filter(tenant=alice.tenant).first()
    if found is not None:
        return found
    return schedule_create(session=alice.session, cron="0 9 * * *", content="Hi.", actor=ACTOR)


# Each case makes the one call under test; `setup` runs first and its events do not count.
CASES: dict[str, tuple[Callable[[Persona], Any] | None, Callable[[Persona], Any]]] = {
    "tenant.created": (None, lambda a: tenant_create(slug="audited-co", actor=ACTOR)),
    "api_key.created": (None, lambda a: api_key_create(tenant=a.tenant, actor=ACTOR)),
    "api_key.revoked": (
        None,
        lambda a: api_key_revoke(key=ApiKey.objects.filter(tenant=a.tenant).get(), actor=ACTOR),
    ),
    "operator.added": (None, _operator),
    "admin.add": (
        None,
        lambda a: admin_object_save(
            obj=RetentionPolicy(tenant=a.tenant),
            tenant_id=a.tenant.pk,
            created=True,
            fields=[],
            actor=ACTOR,
        ),
    ),
    "admin.change": (
        None,
        lambda a: admin_object_save(
            obj=a.agent, tenant_id=a.tenant.pk, created=False, fields=["name"], actor=ACTOR
        ),
    ),
    "admin.delete": (
        None,
        lambda a: admin_object_delete(obj=a.session, actor=ACTOR),
    ),
    "secret.set": (None, lambda a: secret_set(tenant=a.tenant, name="k", value="v", actor=ACTOR)),
    "secret.deleted": (
        lambda a: secret_set(tenant=a.tenant, name="k", value="v", actor=ACTOR),
        lambda a: secret_delete(secret=TenantSecret.objects.get(tenant=a.tenant), actor=ACTOR),
    ),
    "agent.created": (None, lambda a: agent_create(tenant=a.tenant, name="n", actor=ACTOR)),
    "agent.updated": (None, lambda a: agent_update(agent=a.agent, name="renamed", actor=ACTOR)),
    "agent.deleted": (None, lambda a: agent_delete(agent=a.agent, actor=ACTOR)),
    "session.opened": (
        None,
        lambda a: session_open(tenant=a.tenant, agent=a.agent, user_id="x", actor=ACTOR),
    ),
    "session.deleted": (None, lambda a: session_delete(session=a.session, actor=ACTOR)),
    "session.rollback": (None, _rollback_case),
    "session.fork": (None, _fork_case),
    "memory.created": (None, _memory),
    "memory.source_added": (_memory, _second_source),
    "memory.deleted": (
        _memory,
        lambda a: memory_delete(memory=Memory.objects.get(tenant=a.tenant), actor=ACTOR),
    ),
    "user.erase": (None, lambda a: user_erase(tenant=a.tenant, user_id=a.user_id, actor=ACTOR)),
    "tool.created": (None, lambda a: _tool(a)),
    "tool.updated": (_tool, lambda a: tool_update(tool=_tool(a), description="x", actor=ACTOR)),
    "tool.deleted": (_tool, lambda a: tool_delete(tool=_tool(a), actor=ACTOR)),
    "run.cancelled": (
        lambda a: run_create(session=a.session, content="later"),
        lambda a: run_cancel(run=Run.objects.get(session=a.session, background=True), actor=ACTOR),
    ),
    "run.answered": (
        _waiting_run,
        lambda a: run_act(
            run=Run.objects.get(session=a.session, background=True),
            answers=[Answer("c1", approve=False)],
            decided_by="api",
            actor=ACTOR,
        ),
    ),
    "webhook.created": (None, _webhook),
    "webhook.updated": (
        _webhook,
        lambda a: webhook_endpoint_update(endpoint=_webhook(a), description="x", actor=ACTOR),
    ),
    "webhook.disabled": (
        _webhook,
        lambda a: webhook_endpoint_disable(endpoint=_webhook(a), reason="410", actor=ACTOR),
    ),
    "webhook.deleted": (
        _webhook,
        lambda a: webhook_endpoint_delete(endpoint=_webhook(a), actor=ACTOR),
    ),
    "webhook.secret_rotated": (
        _webhook,
        lambda a: webhook_secret_rotate(endpoint=_webhook(a), actor=ACTOR),
    ),
    "schedule.created": (None, _schedule),
    "schedule.updated": (
        _schedule,
        lambda a: schedule_update(schedule=_schedule(a), enabled=False, actor=ACTOR),
    ),
    "schedule.deleted": (
        _schedule,
        lambda a: schedule_delete(schedule=_schedule(a), actor=ACTOR),
    ),
    "retention.enforced": (
        lambda a: RetentionPolicy.objects.create(tenant=a.tenant, message_retention_days=30),
        lambda a: retention_enforce(
            policy=RetentionPolicy.objects.get(tenant=a.tenant), actor=ACTOR
        ),
    ),
}


def test_every_audited_action_has_a_case() -> None:
    assert set(CASES) == set(AUDITED)


@pytest.mark.parametrize("action", sorted(CASES))
def test_each_write_service_records_exactly_one_event_for_its_action(
    alice: Persona, action: str
) -> None:
    turn_run(session=alice.session, content="a turn, so the session has a checkpoint")
    setup, call = CASES[action]
    if setup is not None:
        setup(alice)
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    call(alice)
    events = list(AuditEvent.objects.filter(id__gt=before))
    assert [e.action for e in events] == [action]
    assert (events[0].actor_kind, events[0].actor_id) == (ACTOR.kind, ACTOR.id)


def test_audit_record_is_called_only_by_service_modules() -> None:
    allowed = {
        Path(ROOT, *name.split(".")).with_suffix(".py")
        for name in [*SERVICE_MODULES, "agentplatform.core.audit"]
    }
    callers = []
    for package in ("agentplatform", "agents", "memory"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or path in allowed:
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and node.id == "audit_record":
                    callers.append(str(path.relative_to(ROOT)))
    assert callers == []
