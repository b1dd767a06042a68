"""Read paths for agents, sessions and messages; every one is scoped to a tenant."""

from __future__ import annotations

from django.db.models import QuerySet

from agentplatform.models import Tenant
from agentplatform.tenancy import access_object
from agents.models import Agent, Message, Session


def agent_list(*, tenant: Tenant) -> QuerySet[Agent]:
    agents: QuerySet[Agent] = Agent.objects.for_tenant(tenant)
    return agents


def access_agent(*, tenant: Tenant, id: object) -> Agent:
    return access_object(Agent, tenant=tenant, id=id)  # type: ignore[arg-type]


def session_list(
    *,
    tenant: Tenant,
    agent_id: str | None = None,
    user_id: str | None = None,
    status: str | None = None,
) -> QuerySet[Session]:
    sessions: QuerySet[Session] = Session.objects.for_tenant(tenant)
    if agent_id:
        sessions = sessions.filter(agent_id=agent_id)
    if user_id:
        sessions = sessions.filter(user_id=user_id)
    if status:
        sessions = sessions.filter(status=status)
    return sessions


def access_session(*, tenant: Tenant, id: object) -> Session:
    """The tenant's session with its agent loaded (every turn needs both)."""
    return access_object(
        Session,
        tenant=tenant,
        id=id,  # type: ignore[arg-type]
        queryset=Session.objects.select_related("agent"),
    )


def message_list(*, session: Session, include_inactive: bool = True) -> QuerySet[Message]:
    messages = Message.objects.filter(session=session, tenant_id=session.tenant_id)
    if not include_inactive:
        messages = messages.filter(status=Message.Status.ACTIVE)
    return messages.order_by("seq")
