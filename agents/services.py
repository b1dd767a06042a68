"""Write services for agents, sessions and messages."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from agentplatform.core.audit import Actor, audit_delete, audit_record, audited, unaudited
from agentplatform.infra import jsontext, rows
from agentplatform.models import Tenant
from agents.models import Agent, Message, Session

AGENT_EDITABLE = (
    "name",
    "system_prompt",
    "llm",
    "context_token_budget",
    "working_memory_ttl_seconds",
    "checkpoint_policy",
    "double_text_policy",
    "tools",
)


@audited("agent.created")
@transaction.atomic
def agent_create(*, tenant: Tenant, name: str, actor: Actor, **fields: Any) -> Agent:
    agent = Agent(tenant=tenant, name=name, **fields)
    agent.full_clean()
    agent.save()
    audit_record(
        tenant=tenant,
        actor=actor,
        action="agent.created",
        target=agent,
        payload={"fields": sorted(["name", *fields])},
    )
    return agent


@audited("agent.updated")
@transaction.atomic
def agent_update(*, agent: Agent, actor: Actor, **fields: Any) -> Agent:
    for name, value in fields.items():
        if name not in AGENT_EDITABLE:
            raise ValueError(f"{name} is not editable")
        setattr(agent, name, value)
    agent.full_clean()
    agent.save()
    audit_record(
        tenant=Tenant(pk=agent.tenant_id),
        actor=actor,
        action="agent.updated",
        target=agent,
        payload={"fields": sorted(fields)},
    )
    return agent


@audited("agent.deleted")
def agent_delete(*, agent: Agent, actor: Actor) -> None:
    """Delete the agent and, with it, its sessions and their messages."""
    audit_delete(agent, actor=actor, action="agent.deleted", payload={"name": agent.name})


@audited("session.opened")
@transaction.atomic
def session_open(
    *,
    tenant: Tenant,
    agent: Agent,
    user_id: str,
    metadata: dict[str, Any] | None = None,
    actor: Actor,
) -> Session:
    session = session_new(tenant=tenant, agent=agent, user_id=user_id, metadata=metadata)
    # The end user's id is the tenant's own data: the trail names the session, not the person.
    audit_record(
        tenant=tenant,
        actor=actor,
        action="session.opened",
        target=session,
        payload={"agent": str(agent.pk)},
    )
    return session


@unaudited("a step of a service that records the whole action (session_open, checkpoint_fork)")
def session_new(
    *, tenant: Tenant, agent: Agent, user_id: str, metadata: dict[str, Any] | None = None
) -> Session:
    if agent.tenant_id != tenant.pk:
        raise ValueError("agent belongs to another tenant")
    session = Session(tenant=tenant, agent=agent, user_id=user_id, metadata=metadata or {})
    session.full_clean()
    session.save()
    return session


@audited("session.deleted")
def session_delete(*, session: Session, actor: Actor) -> None:
    audit_delete(
        session, actor=actor, action="session.deleted", payload={"agent": str(session.agent_id)}
    )


class StaleLease(Exception):
    """The writer's lease was taken over: its fencing token no longer matches the session."""


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str
    token_count: int = 0
    status: str = Message.Status.ACTIVE
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class SeqRef:
    """A value of a companion row: the seq the `index`-th appended message receives."""

    index: int


NOW = object()  # a companion row's value: the time it is written (ordered within a transaction)


@dataclass(frozen=True)
class MessageRef:
    """A value of a companion update: the id of the `index`-th appended message."""

    index: int


@dataclass(frozen=True)
class CompanionUpdate:
    """An UPDATE of one row by the statement that appends the messages, when they are
    appended (the run a turn ends: its status and the messages it produced). It applies only
    while the row's `unless` column holds none of `unless_values` (a run already final stays
    so). `probe` is an SQL boolean evaluated with it (%(p_...)s parameters in `probe_params`):
    whether anyone listens for what the write tells, say."""

    table: str
    pk: object
    values: dict[str, Any]
    unless: tuple[str, tuple[str, ...]] | None = None
    probe: str = "false"
    probe_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Appended:
    """What an append wrote: its rows, whether its companion update applied, its probe."""

    rows: list[Message]
    updated: bool = False
    probe: bool = False


@dataclass(frozen=True)
class CompanionRow:
    """A row written by the same statement as the messages, so that it commits with them
    without a transaction's extra round trips (a turn's checkpoint). Its values may be
    SeqRefs or NOW; it is written only when the messages are (the fence holds)."""

    table: str
    values: dict[str, Any]


# One statement, one round trip: reserve the seqs on the session row (the row lock orders
# concurrent appenders) and insert the messages with them (and the companion row). With a
# fence, a taken-over lease matches no session row, so nothing is inserted.
_APPEND = """
WITH reserved AS (
    UPDATE agents_session SET next_seq = next_seq + %(count)s, last_activity_at = now()
    WHERE id = %(session)s {fence}
    RETURNING next_seq - %(count)s AS first_seq
), appended AS (
    INSERT INTO agents_message
        (tenant_id, session_id, seq, role, content, token_count, status, metadata, created_at)
    SELECT %(tenant)s, %(session)s, reserved.first_seq + m.ord, m.role, m.content,
           m.tokens, m.status, m.metadata, now()
    FROM reserved, jsonb_to_recordset(%(messages)s::jsonb)
        AS m(ord int, role text, content text, tokens int, status text, metadata jsonb)
    ORDER BY m.ord
    RETURNING id, seq, created_at
){companion}{update}
SELECT id, seq, created_at, {updated}, {probe} FROM appended
"""


def _companion_sql(row: CompanionRow, params: dict[str, Any]) -> str:
    columns, values = [], []
    for index, (column, value) in enumerate(row.values.items()):
        columns.append(column)
        if isinstance(value, SeqRef):
            values.append(f"reserved.first_seq + {int(value.index)}")
        elif value is NOW:
            values.append("clock_timestamp()")
        else:
            params[f"c{index}"] = value
            values.append(f"%(c{index})s")
    # Table and column names come from code, values travel as parameters.
    return (
        f", companion AS (INSERT INTO {row.table} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(values)} FROM reserved)"
    )


def _update_sql(update: CompanionUpdate, params: dict[str, Any]) -> str:
    assignments = []
    for index, (column, value) in enumerate(update.values.items()):
        if isinstance(value, MessageRef):
            sql = f"(SELECT id FROM appended WHERE seq = reserved.first_seq + {int(value.index)})"  # noqa: S608
        elif value is NOW:
            sql = "clock_timestamp()"
        elif isinstance(value, dict | list):
            params[f"u{index}"] = jsontext.dumps(value)
            sql = f"%(u{index})s::jsonb"
        else:
            params[f"u{index}"] = value
            sql = f"%(u{index})s"
        assignments.append(f"{column} = {sql}")
    params["u_pk"] = update.pk
    condition = ""
    if update.unless is not None:
        params["u_unless"] = rows.array_param(update.unless[1])
        condition = f" AND NOT ({update.table}.{update.unless[0]} = ANY(%(u_unless)s::text[]))"
    params.update(update.probe_params)
    # Table and column names come from code, values travel as parameters.
    return (
        f", updated AS (UPDATE {update.table} SET {', '.join(assignments)} FROM reserved "  # noqa: S608
        f"WHERE {update.table}.id = %(u_pk)s{condition} RETURNING {update.table}.id)"
    )


@unaudited("the conversation itself: its messages and checkpoints are their own record")
def messages_append(
    *,
    session: Session,
    messages: Sequence[NewMessage],
    fence: uuid.UUID | None = None,
    companion: CompanionRow | None = None,
) -> list[Message]:
    """`messages_append_with` without a companion update: the appended rows."""
    return messages_append_with(
        session=session, messages=messages, fence=fence, companion=companion
    ).rows


@unaudited("the conversation itself: its messages and checkpoints are their own record")
def messages_append_with(
    *,
    session: Session,
    messages: Sequence[NewMessage],
    fence: uuid.UUID | None = None,
    companion: CompanionRow | None = None,
    update: CompanionUpdate | None = None,
) -> Appended:
    """Append messages with the next `seq` numbers, gapless and strictly increasing.

    The seqs are reserved by an UPDATE of the session row in the same statement as the
    insert, which serialises concurrent appenders on that row. With `fence` (a turn's lease
    token) that UPDATE is also the fencing check: once another lease took over it matches
    no row, nothing is written and StaleLease is raised. Run it inside the caller's
    transaction when other writes must commit with the messages.
    """
    params: dict[str, Any] = {
        "count": len(messages),
        "session": session.pk,
        "tenant": session.tenant_id,
        "fence": fence,
        # One JSON parameter: psycopg adapts five lists element by element in Python,
        # orjson writes this in one call.
        "messages": jsontext.dumps(
            [
                {
                    "ord": index,
                    "role": m.role,
                    "content": m.content,
                    "tokens": m.token_count,
                    "status": m.status,
                    "metadata": m.metadata or {},
                }
                for index, m in enumerate(messages)
            ]
        ),
    }
    sql = _APPEND.format(
        fence="AND lease_holder = %(fence)s" if fence else "",
        companion=_companion_sql(companion, params) if companion else "",
        update=_update_sql(update, params) if update else "",
        updated="(SELECT count(*) FROM updated) > 0" if update else "false",
        probe=update.probe if update else "false",
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = sorted(cursor.fetchall(), key=lambda row: row[1])
    if len(inserted) != len(messages):
        raise StaleLease("the session's lease was taken over by another turn")
    updated, probe = (bool(inserted[0][3]), bool(inserted[0][4])) if inserted else (False, False)
    return Appended(_rows(session, messages, inserted), updated, probe)


def _rows(
    session: Session, messages: Sequence[NewMessage], inserted: list[tuple[Any, ...]]
) -> list[Message]:
    return [
        Message(
            id=row_id,
            tenant_id=session.tenant_id,
            session=session,
            seq=seq,
            role=item.role,
            content=item.content,
            token_count=item.token_count,
            status=item.status,
            metadata=item.metadata or {},
            created_at=created_at,
        )
        for (row_id, seq, created_at, *_), item in zip(inserted, messages, strict=True)
    ]
