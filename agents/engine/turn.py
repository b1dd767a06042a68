"""The turn: one service used by every transport (REST, SSE, websockets, Celery).

admit (lease per double-text policy) -> load working memory (rebuilt from PostgreSQL on a
miss) -> fit the context into the budget -> stream the LLM (renewing the lease, honouring
interrupts) -> one transaction: fence check, messages, checkpoint -> save working memory
-> release the lease -> events after commit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction

from agentplatform import idempotency
from agents.conf import agents_settings
from agents.engine.concurrency import Lease, LeaseLost, QueueTimeout, SessionBusy, admit
from agents.engine.context import extras_budget, llm_messages, working_memory_budget
from agents.engine.ports import (
    CheckpointRecord,
    ContextExtras,
    WorkingMemory,
    WorkingMessage,
    state_backend,
)
from agents.live import Fanout, FramePublisher
from agents.llm import backend_for, options_for
from agents.llm.base import (
    Delta,
    Done,
    LLMBackend,
    LLMError,
    LLMEvent,
    ToolCall,
    Usage,
    estimate_tokens,
)
from agents.models import Agent, Message, Session
from agents.services import CompanionRow, NewMessage, StaleLease, messages_append

Emit = Callable[[str, dict[str, Any]], None]
CANCEL_CHECK_SECONDS = 0.02
TASK_STATE_TOOL = "update_task_state"


class Outcome:
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    ROLLED_BACK = "rolled_back"


@dataclass
class TurnResult:
    outcome: str
    user_message: Message
    assistant_message: Message | None
    checkpoint: CheckpointRecord | None
    usage: Usage | None
    context_tokens: int
    llm_seconds: float = 0.0
    platform_seconds: float = 0.0  # the turn's wall time minus llm_seconds


class TurnFailed(Exception):
    """The LLM failed; the user's message was kept (status `failed`)."""

    def __init__(self, detail: str, user_message: Message) -> None:
        super().__init__(detail)
        self.user_message = user_message


TURN_FAILURES = (SessionBusy, QueueTimeout, StaleLease, TurnFailed)


@dataclass
class _Generation:
    text: str = ""
    usage: Usage | None = None
    model: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    cancelled: str | None = None  # "interrupt" / "rollback"
    llm_seconds: float = 0.0  # time spent waiting on the backend


def _timed(events: Iterator[LLMEvent], result: _Generation) -> Iterator[LLMEvent]:
    """Yield the backend's events, adding the time spent waiting for each to `result`."""
    while True:
        started = time.perf_counter()
        try:
            event = next(events)
        except StopIteration:
            result.llm_seconds += time.perf_counter() - started
            return
        result.llm_seconds += time.perf_counter() - started
        yield event


def validate_content(content: object) -> str:
    if not isinstance(content, str) or not content.strip():
        raise ValueError("content must be a non-empty string")
    limit = agents_settings().MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise ValueError(f"content must be at most {limit} characters")
    return content


def turn_run(
    *,
    session: Session,
    content: str,
    emit: Emit | None = None,
    metadata: dict[str, Any] | None = None,
    client_message_id: str | None = None,
    fanout: Fanout | None = None,
) -> TurnResult:
    """Run one turn of `session` for the user's `content`; see the module docstring.

    Every frame of the turn is published to the session (stream + open sockets); `emit`
    also receives them, numbered (the SSE response of this request).
    """
    started = time.perf_counter()
    validate_content(content)
    agent: Agent = session.agent
    publisher = FramePublisher(session.pk, local=emit, fanout=fanout)
    # Every frame of this turn names it, so a page can pair replies with their message.
    publisher.extra = {"turn": uuid.uuid4().hex}
    metadata = dict(metadata or {})
    if client_message_id:
        publisher.extra["client_message_id"] = client_message_id
        metadata["client_message_id"] = client_message_id
    try:
        publisher("accepted", {"content": content})
        lease = admit(
            session=session, agent=agent, on_queued=lambda n: publisher("queued", {"position": n})
        )
        try:
            result = _run_holding_lease(session, agent, content, lease, publisher, metadata)
        finally:
            lease.release()
    except TURN_FAILURES as error:
        publisher("error", {"code": failure_code(error), "detail": str(error)})
        raise
    finally:
        publisher.flush()
    result.platform_seconds = time.perf_counter() - started - result.llm_seconds
    return result


def failure_code(error: Exception) -> str:
    """The `code` of an `error` frame (and of the REST problem's type) for a failed turn."""
    if isinstance(error, SessionBusy):
        return "session_busy"
    if isinstance(error, QueueTimeout):
        return "queue_timeout"
    if isinstance(error, TurnFailed):
        return "llm_failed"
    return "lease_lost"


def _run_holding_lease(
    session: Session,
    agent: Agent,
    content: str,
    lease: Lease,
    emit: FramePublisher,
    metadata: dict[str, Any],
) -> TurnResult:
    state = state_backend()
    backend = backend_for(agent)
    memory = state.load_working_memory(session=session, agent=agent)
    budget = working_memory_budget(agent)
    user = WorkingMessage(0, Message.Role.USER, content, backend.count_tokens(content))
    context = state.fit_working_memory(
        memory=replace(memory, messages=[*memory.messages, user]), budget=budget
    )
    if not context.messages:  # a message larger than the budget still goes to the LLM
        context = replace(context, messages=[user])
    extras = state.context_extras(
        session=session, agent=agent, query=content, budget=extras_budget(agent), memory=context
    )
    try:
        generation = _generate(backend, agent, context, extras, lease, emit)
    except LLMError as error:
        user_message = _persist_failure(session, lease, content, user.tokens, memory, metadata)
        state.save_working_memory(
            session=session, agent=agent, memory=replace(memory, high_water_seq=user_message.seq)
        )
        raise TurnFailed(str(error), user_message) from error
    return _persist(
        session, agent, lease, context, extras, user, generation, emit, metadata, backend
    )


def _generate(
    backend: LLMBackend,
    agent: Agent,
    context: WorkingMemory,
    extras: ContextExtras,
    lease: Lease,
    emit: Emit,
) -> _Generation:
    result = _Generation()
    parts: list[str] = []
    checked_at = time.monotonic()
    prompt = llm_messages(agent, context, extras.messages)
    events = iter(backend.stream(prompt, options_for(agent)))
    for event in _timed(events, result):
        if isinstance(event, Delta):
            parts.append(event.text)
            emit("token", {"delta": event.text})
        elif isinstance(event, Done):
            result.text, result.usage, result.model = event.text, event.usage, event.model
            result.tool_calls = list(event.tool_calls)
        if time.monotonic() - checked_at >= CANCEL_CHECK_SECONDS:
            checked_at = time.monotonic()
            if lease.renew_if_due():
                idempotency.heartbeat()
            result.cancelled = lease.cancel_requested()
            if result.cancelled:
                result.text = "".join(parts)
                return result
    return result


def _apply_tool_calls(task_state: dict[str, Any], calls: list[ToolCall]) -> dict[str, Any]:
    """The agent changes its task state through the `update_task_state` tool."""
    updated = dict(task_state)
    for call in calls:
        if call.name == TASK_STATE_TOOL:
            updated.update(call.arguments)
    return updated


def _persist(
    session: Session,
    agent: Agent,
    lease: Lease,
    context: WorkingMemory,
    extras: ContextExtras,
    user: WorkingMessage,
    generation: _Generation,
    emit: FramePublisher,
    metadata: dict[str, Any],
    backend: LLMBackend,
) -> TurnResult:
    state = state_backend()
    outcome, user_status, reply_status = _statuses(generation.cancelled)
    reply_tokens = backend.count_tokens(generation.text)
    usage_meta = _usage_meta(generation)
    compiled = compiled_record(agent, context, extras)
    usage_meta["context"] = compiled
    new = [
        NewMessage(Message.Role.USER, user.content, user.tokens, user_status, metadata),
        NewMessage(Message.Role.ASSISTANT, generation.text, reply_tokens, reply_status, usage_meta),
    ]
    # The working memory after the turn is known before its messages have seqs (fitting
    # looks at tokens only), so its checkpoint is written by the same statement as them.
    after = _next_memory(context, new, generation, outcome)
    after = state.fit_working_memory(memory=after, budget=working_memory_budget(agent))
    checkpoint = _checkpoint_row(session, agent, context, after, len(new), usage_meta, outcome)
    user_row, reply_row = messages_append(
        session=session,
        fence=uuid.UUID(lease.holder),
        messages=new,
        companion=checkpoint[1] if checkpoint else None,
    )
    memory = _with_seqs(after, [user_row, reply_row])
    record = None
    if checkpoint is not None:
        record = CheckpointRecord(checkpoint[0], checkpoint[2], reply_row.seq)
        memory = replace(memory, checkpoint_id=str(record.id))
    transaction.on_commit(lambda: _announce(user_row, reply_row, record, emit))
    state.after_turn(
        session=session,
        agent=agent,
        messages=[user_row, reply_row],
        memory=memory,
        extras=extras,
    )
    # Still holding the lease, so the next turn of this session reads this working memory.
    state.save_working_memory(session=session, agent=agent, memory=memory)
    return TurnResult(
        outcome,
        user_row,
        reply_row,
        record,
        generation.usage,
        compiled["total_tokens"],
        llm_seconds=generation.llm_seconds,
    )


def compiled_record(agent: Agent, context: WorkingMemory, extras: ContextExtras) -> dict[str, Any]:
    """What the LLM received on this turn, by part, for the operators' inspector."""
    system = estimate_tokens(agent.system_prompt)
    seqs = [m.seq for m in context.messages if m.seq]
    return {
        "system_prompt_tokens": system,
        "working_memory": {
            "tokens": context.tokens,
            "messages": len(context.messages),
            "first_seq": min(seqs) if seqs else None,
            "last_seq": max(seqs) if seqs else None,
        },
        "extras_tokens": extras.tokens,
        **extras.record,
        "total_tokens": system + context.tokens + extras.tokens,
    }


def _statuses(cancelled: str | None) -> tuple[str, str, str]:
    active = Message.Status.ACTIVE
    if cancelled == "rollback":
        return Outcome.ROLLED_BACK, Message.Status.ROLLED_BACK, Message.Status.ROLLED_BACK
    if cancelled == "interrupt":
        return Outcome.INTERRUPTED, active, Message.Status.INTERRUPTED
    return Outcome.COMPLETED, active, active


def _usage_meta(generation: _Generation) -> dict[str, Any]:
    if generation.usage is None:
        return {"model": generation.model}
    return {
        "model": generation.model,
        "prompt_tokens": generation.usage.prompt_tokens,
        "completion_tokens": generation.usage.completion_tokens,
    }


def _next_memory(
    context: WorkingMemory, new: list[NewMessage], generation: _Generation, outcome: str
) -> WorkingMemory:
    """Working memory after the turn; the new messages' seqs are not known yet, so each
    carries -1 - its index among them (see `_with_seqs`)."""
    previous = [m for m in context.messages if m.seq != 0]
    high_water = -len(new)  # the last new message
    if outcome == Outcome.ROLLED_BACK:  # the discarded turn leaves no trace in the context
        return WorkingMemory(previous, context.task_state, high_water, context.checkpoint_id)
    messages = [
        *previous,
        *(WorkingMessage(-1 - i, m.role, m.content, m.token_count) for i, m in enumerate(new)),
    ]
    task_state = _apply_tool_calls(context.task_state, generation.tool_calls)
    return WorkingMemory(messages, task_state, high_water, context.checkpoint_id)


def _with_seqs(memory: WorkingMemory, rows: list[Message]) -> WorkingMemory:
    def seq(value: int) -> int:
        return rows[-1 - value].seq if value < 0 else value

    messages = [replace(m, seq=seq(m.seq)) for m in memory.messages]
    return replace(memory, messages=messages, high_water_seq=seq(memory.high_water_seq))


def _checkpoint_row(
    session: Session,
    agent: Agent,
    before: WorkingMemory,
    after: WorkingMemory,
    new_messages: int,
    metadata: dict[str, Any],
    outcome: str,
) -> tuple[uuid.UUID, CompanionRow, str] | None:
    """The checkpoint the agent's policy asks for after this LLM call, if any."""
    if outcome == Outcome.ROLLED_BACK:
        return None
    policy = agent.checkpoint_policy
    if policy == Agent.CheckpointPolicy.TRANSITIONS:
        if after.task_state.get("step") == before.task_state.get("step"):
            return None
        kind = "transition"
    else:
        kind = "llm_call" if policy == Agent.CheckpointPolicy.EVERY_LLM_CALL else "turn"
    checkpoint_id, row = state_backend().checkpoint_row(
        session=session, kind=kind, memory=after, new_messages=new_messages, metadata=metadata
    )
    return checkpoint_id, row, kind


def _persist_failure(
    session: Session,
    lease: Lease,
    content: str,
    tokens: int,
    memory: WorkingMemory,
    metadata: dict[str, Any],
) -> Message:
    with transaction.atomic():
        (row,) = messages_append(
            session=session,
            fence=uuid.UUID(lease.holder),
            messages=[
                NewMessage(Message.Role.USER, content, tokens, Message.Status.FAILED, metadata)
            ],
        )
    return row


def _announce(
    user_row: Message,
    reply_row: Message,
    checkpoint: CheckpointRecord | None,
    publisher: FramePublisher,
) -> None:
    # Payloads are nested: the frame's own `seq` is the session's frame number, while a
    # message's `seq` is its place in the conversation. One round trip for all of them.
    frames = [
        ("message", {"message": message_payload(user_row)}),
        ("message", {"message": message_payload(reply_row)}),
    ]
    if checkpoint is not None:
        frames.append(("checkpoint", {"checkpoint": checkpoint_payload(checkpoint)}))
    publisher.many(frames)


def checkpoint_payload(checkpoint: CheckpointRecord) -> dict[str, Any]:
    return {
        "id": str(checkpoint.id),
        "kind": checkpoint.kind,
        "high_water_seq": checkpoint.high_water_seq,
    }


def message_payload(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "token_count": message.token_count,
        "created_at": message.created_at.isoformat() if message.created_at else None,
    }


__all__ = ["LeaseLost", "Outcome", "TurnFailed", "TurnResult", "turn_run", "validate_content"]
