"""The turn: one service used by every transport (REST, SSE, websockets, Celery).

admit (lease per double-text policy) -> load working memory (rebuilt from PostgreSQL on a
miss) -> fit the context into the budget -> stream the LLM (renewing the lease, honouring
interrupts) -> run the tools it called and call it again, up to MAX_LLM_CALLS -> one
statement: fence check, messages, checkpoint -> save working memory -> release the lease ->
events after commit.

Under `every_llm_call` each LLM call that asked for tools is written at once with an open
checkpoint (the tool calls and results are its recorded side effects), so a turn cut off
between calls resumes there when retried under the same turn key (an Idempotency-Key, a
websocket's client_message_id) or found by the recovery task, and no recorded tool runs
twice. Under the other policies a turn's messages are written together at its end.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction

from agentplatform.http import idempotency
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import write_batch
from agents.conf import agents_settings
from agents.engine.concurrency import (
    ActionRequired,
    Lease,
    LeaseLost,
    LeaseOffer,
    QueueTimeout,
    RunCancelled,
    SessionBusy,
    admit,
    lease_offer,
    lease_try_acquire,
)
from agents.engine.context import extras_budget, llm_messages, working_memory_budget
from agents.engine.payloads import checkpoint_payload, compiled_record, message_payload
from agents.engine.ports import (
    CheckpointKind,
    CheckpointRecord,
    CheckpointRequest,
    ClaimRead,
    ContextExtras,
    StateBackend,
    TurnProgress,
    WorkingMemory,
    WorkingMemoryRead,
    WorkingMessage,
    state_backend,
)
from agents.engine.runs import (
    NewRun,
    run_end_update,
    run_end_written,
    run_ended,
    run_find,
    run_open,
    run_paused,
)
from agents.live import Fanout, FramePublisher
from agents.llm import backend_for, options_for
from agents.llm.base import (
    ChatMessage,
    Delta,
    Done,
    LLMError,
    LLMEvent,
    ToolCall,
    Usage,
)
from agents.models import Agent, Message, Run, Session
from agents.services import (
    Appended,
    CompanionUpdate,
    MessageRef,
    NewMessage,
    SeqRef,
    StaleLease,
    messages_append,
)
from agents.tenant_tools import agent_tools
from agents.tools import (
    BUILT_IN,
    CHECKPOINT_TOOL,
    TASK_STATE_TOOL,
    Tool,
    ToolContext,
    arguments_problem,
)

Emit = Callable[[str, dict[str, Any]], None]
CANCEL_CHECK_SECONDS = 0.02


class Outcome:
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"  # a newer message stopped it (interrupt policy)
    ROLLED_BACK = "rolled_back"  # a newer message discarded it (rollback policy)
    CANCELLED = "cancelled"  # its run was cancelled, or expired while waiting
    REQUIRES_ACTION = "requires_action"  # it waits for approvals or a client's tool outputs


# A run's status and error code after each outcome but the pause.
_RUN_ENDS = {
    Outcome.COMPLETED: (Run.Status.COMPLETED, None),
    Outcome.INTERRUPTED: (Run.Status.CANCELLED, "interrupted"),
    Outcome.ROLLED_BACK: (Run.Status.CANCELLED, "rolled_back"),
    Outcome.CANCELLED: (Run.Status.CANCELLED, "cancelled"),
}


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
    run: Run | None = None
    # The calls waiting for an output or a decision (outcome `requires_action`).
    required_action: list[dict[str, Any]] | None = None


class TurnFailed(Exception):
    """The LLM failed; the user's message was kept (status `failed`)."""

    def __init__(self, detail: str, user_message: Message) -> None:
        super().__init__(detail)
        self.user_message = user_message


TURN_FAILURES = (SessionBusy, QueueTimeout, StaleLease, TurnFailed, RunCancelled)


@dataclass(frozen=True)
class Settle:
    """Close a turn that waits for an action without running it further: each pending call
    gets an error result (`detail`), so the history never holds a call without one.
    `outcome` is CANCELLED (cancelled, expired, interrupted) or ROLLED_BACK."""

    outcome: str
    code: str  # the run's error code: cancelled, expired, interrupted, rolled_back
    detail: str

    @property
    def run_status(self) -> str:
        return Run.Status.EXPIRED if self.code == "expired" else Run.Status.CANCELLED


EXPIRED = Settle(Outcome.CANCELLED, "expired", "No action came in time: the run expired.")
CANCELLED = Settle(Outcome.CANCELLED, "cancelled", "The run was cancelled.")


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


def turn_run(
    *,
    session: Session,
    content: str,
    emit: Emit | None = None,
    metadata: dict[str, Any] | None = None,
    client_message_id: str | None = None,
    fanout: Fanout | None = None,
    turn_key: str | None = None,
    run: Run | None = None,
    new_key: bool = False,
) -> TurnResult:
    """Run one turn of `session` for the user's `content`; see the module docstring.

    Every frame of the turn is published to the session (stream + open sockets); `emit`
    also receives them, numbered (the SSE response of this request). A turn begun before
    under the same `turn_key` is resumed (or, when it finished, its result returned), unless
    `new_key` says the key was created for this turn. The turn is `run` (a background run,
    taken by a worker) or a new run its caller waits on.
    """
    started = time.perf_counter()
    agent: Agent = session.agent
    publisher = FramePublisher(session.pk, local=emit, fanout=fanout)
    # Only a caller's key can have been used before, unless it was just created (then no
    # earlier attempt left a run or messages to find: two lookups fewer).
    resumable = turn_key is not None and not new_key
    turn_key = turn_key or uuid.uuid4().hex
    metadata = {**(metadata or {}), "turn": turn_key}
    new_run = None
    if run is None:
        opened = run_open(
            session=session,
            content=content,
            turn_key=turn_key,
            metadata=metadata,
            retried=resumable,
        )
        new_run = opened if isinstance(opened, NewRun) else None
        run = opened.run if isinstance(opened, NewRun) else opened
        if new_run is None and run.status == Run.Status.COMPLETED and run.user_message_id:
            # It finished under this key, but its caller never learnt it (the process died
            # before the key recorded the result): its result, never a second run.
            return _finished(run)
    # Every frame of this turn names it, so a page can pair replies with their message.
    publisher.extra = {"turn": turn_key, "run": str(run.pk)}
    if client_message_id:
        publisher.extra["client_message_id"] = client_message_id
        metadata["client_message_id"] = client_message_id
    try:
        # A resumed run's message was accepted before.
        accepted = content if run.user_message_id is None else None
        offer, first_read = _first_round_trip(session, publisher, accepted)
        claim_read = _context_read(session, agent, content, first_read) if offer.taken else None
        lease = admit(
            session=session,
            agent=agent,
            on_queued=lambda n: publisher("queued", {"position": n}),
            stop_key=redis_keys.run_stop(session.pk, run.pk),
            with_row=new_run,
            offer=offer,
            with_read=claim_read,
        )
        # Read before this turn held the lease (the turn before may change it), or before
        # settling a waiting run (which saves working memory): read again.
        read = first_read if offer.taken and not lease.awaiting else None
        if lease.awaiting and lease.awaiting != turn_key:
            # Before the batch below: what settling writes to Redis, this turn reads.
            try:
                _meet_waiting(session, agent, lease, fanout)
            except BaseException:
                lease.release()
                raise
        # The final frames, working-memory save and the release share one Redis round trip.
        with write_batch():
            try:
                turn = _Turn(
                    session,
                    agent,
                    lease,
                    publisher,
                    turn_key,
                    run,
                    read=read,
                    claim_read=claim_read,
                )
                result = turn.run(content, metadata, resumable=resumable)
            finally:
                lease.release()
    except TURN_FAILURES as error:
        code = failure_code(error)
        publisher("error", {"code": code, "detail": str(error)})
        status = Run.Status.CANCELLED if isinstance(error, RunCancelled) else Run.Status.FAILED
        user = error.user_message if isinstance(error, TurnFailed) else None
        run_ended(run, status, user_message=user, error={"code": code, "detail": str(error)})
        raise
    finally:
        publisher.flush()
    result.platform_seconds = time.perf_counter() - started - result.llm_seconds
    result.run = run
    return result


def _finished(run: Run) -> TurnResult:
    """The result of a run that completed before."""
    ids = [run.user_message_id, run.assistant_message_id]
    rows = list(Message.objects.filter(session_id=run.session_id, pk__in=ids).order_by("seq"))
    user = next(row for row in rows if row.pk == run.user_message_id)
    reply = next((row for row in rows if row.pk == run.assistant_message_id), None)
    return TurnResult(Outcome.COMPLETED, user, reply, None, None, 0, run=run)


def _first_round_trip(
    session: Session, publisher: FramePublisher, accepted: str | None
) -> tuple[LeaseOffer, WorkingMemoryRead]:
    """The turn's `accepted` frame (for `accepted`, the message's content), the lease's
    offer and the working memory read: one Redis round trip. A lease taken by a batch that
    failed is given back."""
    offer: LeaseOffer | None = None
    try:
        with write_batch():
            if accepted is not None:
                publisher.many([("accepted", {"content": accepted})], batched=True)
            offer = lease_offer(session)
            read = state_backend().read_working_memory(session=session)
    except BaseException:
        if offer is not None:
            offer.give_back()
        raise
    return offer, read


def _context_read(
    session: Session, agent: Agent, content: str, read: WorkingMemoryRead
) -> ClaimRead | None:
    """What the context of this turn will read from PostgreSQL (its memory tiers), to read
    with the lease's claim: the context as `_prepare` will fit it, from the working memory
    read with the lease's offer. When the turn's context turns out otherwise (a resumed
    turn, a settled waiting run), the state backend reads afresh."""
    if not read.done or read.memory is None:
        return None
    state = state_backend()
    tokens = backend_for(agent).count_tokens(content)
    user = WorkingMessage(SeqRef(0), Message.Role.USER, content, tokens)
    context = _fitted_with(state, agent, read.memory, user)
    return state.context_read(session=session, memory=context)


def _fitted_with(
    state: StateBackend, agent: Agent, memory: WorkingMemory, user: WorkingMessage
) -> WorkingMemory:
    """Working memory with the user's message, fitted to the agent's budget."""
    return state.fit_working_memory(
        memory=replace(memory, messages=[*memory.messages, user]),
        budget=working_memory_budget(agent),
    )


def turn_settle(*, session: Session, run: Run, settle: Settle) -> TurnResult | None:
    """Close `run`'s turn, which waits for an action (cancelled, expired): its pending calls
    get error results and the run its final status. None when the session is busy (a turn
    runs on it now: perhaps this very run, resumed; it will see the run's cancel request)."""
    lease = lease_try_acquire(session)
    if lease is None:
        return None
    with write_batch():
        try:
            return _settle_with(session, session.agent, lease, run, settle, None)
        finally:
            lease.release()


def _meet_waiting(session: Session, agent: Agent, lease: Lease, fanout: Fanout | None) -> None:
    """A new message meets a run waiting for an action. `interrupt` cancels the waiting run
    and `rollback` discards it (its pending calls get error results either way); `reject`
    and `enqueue` refuse the message, since the wait may last days."""
    policy = agent.double_text_policy
    waiting = run_find(session, lease.awaiting)
    if policy == Agent.DoubleTextPolicy.INTERRUPT and waiting is not None:
        settle = Settle(Outcome.CANCELLED, "interrupted", "Interrupted by a newer message.")
    elif policy == Agent.DoubleTextPolicy.ROLLBACK and waiting is not None:
        settle = Settle(Outcome.ROLLED_BACK, "rolled_back", "Rolled back by a newer message.")
    elif waiting is None or waiting.final:
        # A stale marker (its run is gone or ended): clear it and go on.
        Session.objects.filter(pk=session.pk).update(awaiting_turn="")
        return
    else:
        raise ActionRequired(
            f"Run {waiting.pk} is waiting for an action (POST /api/v1/runs/{waiting.pk}"
            "/actions/); cancel it or answer it before sending another message."
        )
    _settle_with(session, agent, lease, waiting, settle, fanout)


def _settle_with(
    session: Session,
    agent: Agent,
    lease: Lease,
    run: Run,
    settle: Settle,
    fanout: Fanout | None,
) -> TurnResult | None:
    publisher = FramePublisher(session.pk, fanout=fanout)
    publisher.extra = {"turn": run.turn_key, "run": str(run.pk)}
    try:
        turn = _Turn(session, agent, lease, publisher, run.turn_key, run, settle=settle)
        return turn.settle_waiting()
    finally:
        publisher.flush()


def failure_code(error: Exception) -> str:
    """The `code` of an `error` frame (and of the REST problem's type) for a failed turn."""
    if isinstance(error, ActionRequired):
        return "action_required"
    if isinstance(error, SessionBusy):
        return "session_busy"
    if isinstance(error, QueueTimeout):
        return "queue_timeout"
    if isinstance(error, TurnFailed):
        return "llm_failed"
    if isinstance(error, RunCancelled):
        return "cancelled"
    return "lease_lost"


@dataclass(frozen=True)
class _Prepared:
    """A turn's context, ready for the LLM: working memory as loaded (`before`, restored if
    the LLM fails), the user's message, the fitted context, its extras and their record."""

    before: WorkingMemory
    user: WorkingMessage
    context: WorkingMemory
    extras: ContextExtras
    compiled: dict[str, Any]


@dataclass(frozen=True)
class _CheckpointSpec:
    """The checkpoint a write makes: its kind, and whether the turn goes on after it."""

    kind: str
    open: bool = False


@dataclass(frozen=True)
class _Write:
    """What one write stored: its rows, the working memory after it, its checkpoint."""

    rows: list[Message]
    memory: WorkingMemory
    checkpoint: CheckpointRecord | None
    appended: Appended


@dataclass
class _Written:
    """Messages of this turn already in PostgreSQL (an earlier LLM call, or a resumed run)."""

    rows: list[Message] = field(default_factory=list)
    checkpoint_id: str | None = None


class _Turn:
    """One turn holding the session's lease: LLM calls, tools, writes."""

    def __init__(
        self,
        session: Session,
        agent: Agent,
        lease: Lease,
        emit: FramePublisher,
        key: str,
        run: Run,
        *,
        settle: Settle | None = None,
        read: WorkingMemoryRead | None = None,
        claim_read: ClaimRead | None = None,
    ) -> None:
        self.session = session
        self.agent = agent
        self.lease = lease
        self.emit = emit
        self.key = key
        self.run_row = run
        self.settle = settle
        self.awaiting: list[dict[str, Any]] = []  # calls waiting for an output or decision
        self.state = state_backend()
        self.backend = backend_for(agent)
        self.tools = agent_tools(agent)
        self.policy = agent.checkpoint_policy
        self.written = _Written()
        self.pending: list[NewMessage] = []  # not written yet, in order
        self.exchange: list[ChatMessage] = []  # this turn's tool calls and results
        self.side_effects: list[dict[str, Any]] = []  # since the last checkpoint
        self.calls = 0
        self.llm_seconds = 0.0
        self.checkpoint_asked = False
        self.read = read  # the working memory, read with the lease's offer
        self.claim_read = claim_read  # the memory tiers' lookup, read with its claim

    # --- the loop -----------------------------------------------------------------------

    def run(self, content: str, metadata: dict[str, Any], *, resumable: bool) -> TurnResult:
        """Replay a finished turn, or prepare the context (resuming a cut-off turn) and run
        the LLM/tool loop to the turn's closing write."""
        progress = None
        if resumable:
            progress = self.state.turn_progress(session=self.session, turn_key=self.key)
        if progress is not None and not progress.resumable:
            return self._replay(progress.messages)
        prepared = self._prepare(content, metadata, progress)
        waiting = _unanswered(progress.messages) if progress is not None else []
        if waiting:
            stopped = self._answer(prepared, waiting)
            if stopped is not None:
                return stopped
        return self._loop(prepared)

    def settle_waiting(self) -> TurnResult | None:
        """Settle this run's waiting turn (see `Settle`). A run with nothing written, or
        whose turn closed meanwhile, just ends (None)."""
        assert self.settle is not None
        progress = self.state.turn_progress(session=self.session, turn_key=self.key)
        if progress is None or not progress.resumable:
            self._clear_waiting()
            error = {"code": self.settle.code, "detail": self.settle.detail}
            run_ended(self.run_row, self.settle.run_status, error=error)
            self.emit.many([_run_frame(self.run_row)])
            return None
        prepared = self._prepare(self.run_row.content, {}, progress)
        return self._answer(prepared, _unanswered(progress.messages))

    def _prepare(
        self, content: str, metadata: dict[str, Any], progress: TurnProgress | None
    ) -> _Prepared:
        """Working memory with the user's message, fitted to the budget, and the extras
        (summaries, memories) around it."""
        memory = self.state.load_working_memory(
            session=self.session, agent=self.agent, read=self.read
        )
        user_tokens = self.backend.count_tokens(content)
        if progress is not None:
            memory = self._resume(progress, memory)
            user = WorkingMessage(self.written.rows[0].seq, Message.Role.USER, content, user_tokens)
        else:
            # The first message of the turn's first write.
            user = WorkingMessage(SeqRef(0), Message.Role.USER, content, user_tokens)
            self.pending.append(
                NewMessage(Message.Role.USER, content, user_tokens, metadata=metadata)
            )
        context = _fitted_with(self.state, self.agent, memory, user)
        if not context.messages:  # a message larger than the budget still goes to the LLM
            context = replace(context, messages=[user])
        extras = self.state.context_extras(
            session=self.session,
            agent=self.agent,
            query=content,
            budget=extras_budget(self.agent),
            memory=context,
            read=self.claim_read,
        )
        return _Prepared(
            memory, user, context, extras, compiled_record(self.agent, context, extras)
        )

    def _loop(self, prepared: _Prepared) -> TurnResult:
        """Call the LLM, run the tools it asks for and call it again, until it answers
        without tools, is cancelled, or MAX_LLM_CALLS is reached."""
        context, extras, user = prepared.context, prepared.extras, prepared.user
        task_state = dict(context.task_state)
        while True:
            if self.calls and self.lease.cancel_requested() == "cancel":
                # Cancelled between two LLM calls (while a tool ran, say): end here.
                return self._finish(prepared, _Generation(cancelled="cancel"), task_state)
            try:
                generation = self._generate(context, extras)
            except LLMError as error:
                raise TurnFailed(str(error), self._fail(prepared.before)) from error
            self.calls += 1
            task_state = self._apply_built_ins(task_state, generation.tool_calls)
            calls = [c for c in generation.tool_calls if c.name not in BUILT_IN]
            final = (
                generation.cancelled is not None
                or not calls
                or self.calls >= agents_settings().MAX_LLM_CALLS
            )
            if final:
                return self._finish(prepared, generation, task_state)
            self._call_tools(generation)
            if self.awaiting:
                return self._pause(prepared, task_state, generation.usage)
            if self.policy == Agent.CheckpointPolicy.EVERY_LLM_CALL:
                self._write_step(context, task_state, user)

    def _generate(self, context: WorkingMemory, extras: ContextExtras) -> _Generation:
        result = _Generation()
        parts: list[str] = []
        checked_at = time.monotonic()
        prompt = llm_messages(self.agent, context, extras.messages) + self.exchange
        events = iter(self.backend.stream(prompt, options_for(self.agent, self.tools)))
        try:
            for event in _timed(events, result):
                if isinstance(event, Delta):
                    parts.append(event.text)
                    self.emit("token", {"delta": event.text})
                elif isinstance(event, Done):
                    result.text, result.usage, result.model = event.text, event.usage, event.model
                    result.tool_calls = list(event.tool_calls)
                if time.monotonic() - checked_at >= CANCEL_CHECK_SECONDS:
                    checked_at = time.monotonic()
                    if self.lease.renew_if_due():
                        idempotency.heartbeat()
                    result.cancelled = self.lease.cancel_requested()
                    if result.cancelled:
                        result.text = "".join(parts)
                        return result
        finally:
            self.llm_seconds += result.llm_seconds
        return result

    def _apply_built_ins(self, task_state: dict[str, Any], calls: list[ToolCall]) -> dict[str, Any]:
        """The agent changes its task state through `update_task_state` and asks for a
        checkpoint through `request_checkpoint`."""
        updated = dict(task_state)
        for call in calls:
            if call.name == TASK_STATE_TOOL:
                updated.update(call.arguments)
            elif call.name == CHECKPOINT_TOOL:
                self.checkpoint_asked = True
        return updated

    def _call_tools(self, generation: _Generation) -> None:
        """Run the tools the LLM asked for; their calls and results become messages."""
        meta = {
            **_usage_meta(generation),
            "turn": self.key,
            "llm_call": self.calls,
            "tool_calls": [_call_dict(c) for c in generation.tool_calls],
        }
        tokens = self.backend.count_tokens(generation.text)
        self.pending.append(
            NewMessage(Message.Role.ASSISTANT, generation.text, tokens, metadata=meta)
        )
        self.exchange.append(
            ChatMessage(Message.Role.ASSISTANT, generation.text, tuple(generation.tool_calls))
        )
        # Every call gets an answer (OpenAI requires one per call id); the built-ins were
        # applied already and are no side effect.
        for position, call in enumerate(generation.tool_calls):
            tool = self.tools.get(call.name)
            problem = arguments_problem(tool, call.arguments) if tool is not None else None
            if call.name in BUILT_IN:
                self._tool_result(call, position, {"ok": True})
            elif problem is not None:
                # The LLM's own mistake: it reads why and may call again (no approval asked).
                error = {"error": f"The arguments do not match the tool's schema: {problem}"}
                self._tool_result(call, position, error, ran=False)
            elif tool is not None and tool.needs_action:
                self.awaiting.append(_awaiting(call, tool))
            else:
                self._tool_result(call, position, self._run_tool(call, self._call_key(position)))

    def _call_key(self, position: int) -> str:
        """The idempotency key of a call: the same when its turn is resumed or retried."""
        return f"{self.key}:{self.calls}:{position}"

    def _tool_result(self, call: ToolCall, position: int, result: Any, *, ran: bool = True) -> None:
        """A call's result becomes a message of the turn (and a recorded side effect when a
        tool ran for it)."""
        key = self._call_key(position)
        if ran and call.name not in BUILT_IN:
            self.side_effects.append(
                {"tool": call.name, "arguments": call.arguments, "idempotency_key": key}
                | {"result": result}
            )
        text = json.dumps(result, default=str)
        meta = {"turn": self.key, "tool_call_id": call.id, "name": call.name}
        self.pending.append(
            NewMessage(
                Message.Role.TOOL,
                text,
                self.backend.count_tokens(text),
                metadata={**meta, "idempotency_key": key},
            )
        )
        self.exchange.append(ChatMessage(Message.Role.TOOL, text, tool_call_id=call.id))

    def _run_tool(self, call: ToolCall, key: str) -> Any:
        tool = self.tools.get(call.name)
        if tool is None:
            return {"error": f"unknown tool {call.name!r}"}
        if tool.run is None:
            return {"error": f"{call.name!r} is run by the client, which sent no output"}
        context = ToolContext(
            self.session.tenant_id, self.session.pk, self.session.user_id, key, call.id
        )
        try:
            return tool.run(call.arguments, context)
        except Exception as error:
            return {"error": f"{type(error).__name__}: {error}"}

    # --- waiting for actions --------------------------------------------------------------

    def _pause(
        self, prepared: _Prepared, task_state: dict[str, Any], usage: Usage | None
    ) -> TurnResult:
        """Stop for the calls in `awaiting`. What the turn did so far is written with an open
        checkpoint, the session notes the waiting run, the run its required action: from
        here PostgreSQL alone holds the turn, so it survives restarts and may wait days."""
        metadata = {"llm_call": self.calls, "awaiting": [c["id"] for c in self.awaiting]}
        write = None
        with transaction.atomic():
            if self.pending:
                spec = _CheckpointSpec(CheckpointKind.LLM_CALL, open=True)
                write = self._write(prepared.context, task_state, prepared.user, spec, metadata)
            Session.objects.filter(pk=self.session.pk, lease_holder=self.lease.holder).update(
                awaiting_turn=self.key
            )
            run_paused(
                self.run_row,
                self.awaiting,
                self.agent.action_timeout_seconds,
                self.written.rows[0],
            )
        frames: list[tuple[str, dict[str, Any]]] = [_run_frame(self.run_row)]
        if write is not None:
            frames = [*_frames_of(write), *frames]
            self.state.save_working_memory(
                session=self.session, agent=self.agent, memory=write.memory
            )
        self.emit.many(frames)
        return TurnResult(
            Outcome.REQUIRES_ACTION,
            self.written.rows[0],
            None,
            write.checkpoint if write else None,
            usage,
            prepared.compiled["total_tokens"],
            llm_seconds=self.llm_seconds,
            required_action=list(self.awaiting),
        )

    def _answer(
        self, prepared: _Prepared, waiting: list[tuple[int, ToolCall]]
    ) -> TurnResult | None:
        """A waiting turn resumes: each pending call gets its result from the run's
        outputs and decisions (an approved call's tool runs now), or an error result when
        the turn is settled. None when the turn goes on to its next LLM call."""
        answers = self.run_row.action_results or {}
        for position, call in waiting:
            answer = answers.get(call.id)
            tool = self.tools.get(call.name)
            if self.settle is not None:
                self._tool_result(call, position, {"error": self.settle.detail}, ran=False)
            elif answer is None and tool is not None and tool.needs_action:
                self.awaiting.append(_awaiting(call, tool))
            elif answer is not None and "output" in answer:
                self._tool_result(call, position, answer["output"], ran=False)
            elif answer is not None and answer.get("approve"):
                self._tool_result(call, position, self._run_tool(call, self._call_key(position)))
            elif answer is not None:
                denied = {"error": "The call was not approved.", "reason": answer.get("reason", "")}
                self._tool_result(call, position, denied, ran=False)
            else:  # the tool was removed from the agent while the run waited
                self._tool_result(call, position, self._run_tool(call, ""), ran=False)
        context, user = prepared.context, prepared.user
        if self.settle is not None:
            return self._close(prepared)
        if self.awaiting:
            return self._pause(prepared, dict(context.task_state), None)
        with transaction.atomic():
            metadata = {"llm_call": self.calls, "answered": [call.id for _, call in waiting]}
            spec = _CheckpointSpec(CheckpointKind.LLM_CALL, open=True)
            write = self._write(context, dict(context.task_state), user, spec, metadata)
            self._clear_waiting()
        self.run_row.required_action = None
        self.emit.many(_frames_of(write))
        self.state.save_working_memory(session=self.session, agent=self.agent, memory=write.memory)
        return None

    def _close(self, prepared: _Prepared) -> TurnResult:
        """Settle the waiting turn: its pending calls' error results and a closing
        checkpoint (so nothing resumes it), all messages rolled back if asked."""
        assert self.settle is not None
        context, user = prepared.context, prepared.user
        if self.settle.outcome == Outcome.ROLLED_BACK:
            self.pending = [replace(m, status=Message.Status.ROLLED_BACK) for m in self.pending]
            _mark_rolled_back(self.written.rows)
        with transaction.atomic():
            spec = _CheckpointSpec(CheckpointKind.TURN)
            metadata = {"settled": self.settle.code}
            write = self._write(context, dict(context.task_state), user, spec, metadata)
            self._clear_waiting()
            error = {"code": self.settle.code, "detail": self.settle.detail}
            run_ended(self.run_row, self.settle.run_status, user_message=write.rows[0], error=error)
        self.emit.many([*_frames_of(write), _run_frame(self.run_row)])
        self.state.save_working_memory(session=self.session, agent=self.agent, memory=write.memory)
        return TurnResult(
            self.settle.outcome, self.written.rows[0], None, write.checkpoint, None, 0
        )

    def _clear_waiting(self) -> None:
        Session.objects.filter(
            pk=self.session.pk, lease_holder=self.lease.holder, awaiting_turn=self.key
        ).update(awaiting_turn="")

    # --- writes -------------------------------------------------------------------------

    def _write(
        self,
        context: WorkingMemory,
        task_state: dict[str, Any],
        user: WorkingMessage,
        checkpoint: _CheckpointSpec | None,
        metadata: dict[str, Any],
        update: CompanionUpdate | None = None,
    ) -> _Write:
        """Write the pending messages, the checkpoint and `update` (the run it ends),
        through the state backend, in one statement."""
        new, self.pending = self.pending, []
        after = _memory_after(context, self.written.rows, new, task_state, user)
        after = replace(after, checkpoint_id=self.written.checkpoint_id or context.checkpoint_id)
        after = self.state.fit_working_memory(
            memory=after, budget=working_memory_budget(self.agent)
        )
        request = None
        if checkpoint is not None:
            request = CheckpointRequest(
                kind=checkpoint.kind,
                memory=after,
                metadata=metadata,
                turn_key=self.key,
                turn_open=checkpoint.open,
                # The user's message: written already, or the first of these.
                turn_first_seq=self.written.rows[0].seq if self.written.rows else SeqRef(0),
                side_effects=self.side_effects,
            )
            self.side_effects = []
        appended, record_id = self.state.turn_write(
            session=self.session,
            fence=uuid.UUID(self.lease.holder),
            messages=new,
            checkpoint=request,
            update=update,
        )
        rows = appended.rows
        self.written.rows.extend(rows)
        memory = after.resolved(rows)
        record = None
        if record_id is not None and checkpoint is not None:
            record = CheckpointRecord(record_id, checkpoint.kind, rows[-1].seq)
            self.written.checkpoint_id = str(record_id)
            memory = replace(memory, checkpoint_id=str(record_id))
        return _Write(rows, memory, record, appended)

    def _write_step(
        self, context: WorkingMemory, task_state: dict[str, Any], user: WorkingMessage
    ) -> None:
        """`every_llm_call`: this call's messages and an open checkpoint, now."""
        metadata = {"llm_call": self.calls}
        write = self._write(
            context, task_state, user, _CheckpointSpec(CheckpointKind.LLM_CALL, open=True), metadata
        )
        transaction.on_commit(lambda: self.emit.many(_frames_of(write)))
        self.state.save_working_memory(session=self.session, agent=self.agent, memory=write.memory)

    def _finish(
        self, prepared: _Prepared, generation: _Generation, task_state: dict[str, Any]
    ) -> TurnResult:
        context, extras, user = prepared.context, prepared.extras, prepared.user
        outcome, reply_status = _statuses(generation.cancelled)
        meta = {**_usage_meta(generation), "turn": self.key, "llm_call": self.calls}
        meta["context"] = prepared.compiled
        tokens = self.backend.count_tokens(generation.text)
        self.pending.append(
            NewMessage(Message.Role.ASSISTANT, generation.text, tokens, reply_status, meta)
        )
        if outcome == Outcome.ROLLED_BACK:
            # The discarded turn leaves no trace in the context; what it wrote is marked.
            self.pending = [replace(m, status=Message.Status.ROLLED_BACK) for m in self.pending]
            _mark_rolled_back(self.written.rows)
            task_state = context.task_state
        checkpoint = self._closing_checkpoint(context, task_state, outcome)
        status, code = _RUN_ENDS[outcome]
        run_end = run_end_update(
            self.run_row,
            status,
            # The user's message: written already, or the first of this write.
            user_message=self.written.rows[0] if self.written.rows else MessageRef(0),
            assistant_message=MessageRef(len(self.pending) - 1),  # the reply, last
            usage=generation.usage,
            error=None if code is None else {"code": code, "detail": _END_DETAILS[code]},
        )
        write = self._write(context, task_state, user, checkpoint, meta, run_end)
        run_end_written(self.run_row, run_end, write.appended)
        every = [*self.written.rows]
        frames = [*_frames_of(write), _run_frame(self.run_row)]
        # Published with the working memory's save and the lease's release (turn_run's batch).
        transaction.on_commit(lambda: self.emit.many(frames, batched=True))
        self.state.after_turn(
            session=self.session,
            agent=self.agent,
            messages=every,
            memory=write.memory,
            extras=extras,
        )
        # Still holding the lease, so the next turn of this session reads this working memory.
        self.state.save_working_memory(session=self.session, agent=self.agent, memory=write.memory)
        return TurnResult(
            outcome,
            every[0],
            every[-1],
            write.checkpoint,
            generation.usage,
            prepared.compiled["total_tokens"],
            llm_seconds=self.llm_seconds,
        )

    def _closing_checkpoint(
        self, context: WorkingMemory, task_state: dict[str, Any], outcome: str
    ) -> _CheckpointSpec | None:
        """The turn's closing checkpoint, by the agent's policy (none for a rolled-back turn)."""
        if outcome == Outcome.ROLLED_BACK:
            # Nothing to restore, but an open checkpoint of an earlier step must be closed,
            # or the recovery task would resume the discarded turn.
            return _CheckpointSpec(CheckpointKind.TURN) if self.written.checkpoint_id else None
        if self.policy == Agent.CheckpointPolicy.EVERY_LLM_CALL:
            return _CheckpointSpec(CheckpointKind.LLM_CALL)
        if self.policy == Agent.CheckpointPolicy.EVERY_TURN:
            return _CheckpointSpec(CheckpointKind.TURN)
        if task_state.get("step") != context.task_state.get("step"):
            return _CheckpointSpec(CheckpointKind.TRANSITION)
        if self.checkpoint_asked:
            return _CheckpointSpec(CheckpointKind.MANUAL)
        return None

    def _fail(self, before: WorkingMemory) -> Message:
        """The LLM failed. Unwritten messages are kept (the user's marked failed, tool
        calls that ran stay recorded); written ones stay, and so does an open checkpoint, so
        a retry under the same key resumes from it."""
        if self.pending:
            if not self.written.rows:
                self.pending[0] = replace(self.pending[0], status=Message.Status.FAILED)
            rows = messages_append(
                session=self.session, fence=uuid.UUID(self.lease.holder), messages=self.pending
            )
            self.pending = []
            self.written.rows.extend(rows)
            high_water = max(before.high_water_seq, rows[-1].seq)
            self.state.save_working_memory(
                session=self.session,
                agent=self.agent,
                memory=replace(before, high_water_seq=high_water),
            )
        return self.written.rows[0]

    def _resume(self, progress: TurnProgress, memory: WorkingMemory) -> WorkingMemory:
        """Continue a turn cut off after some LLM calls: its messages become this run's
        exchange (recorded tool results are not run again)."""
        self.written = _Written(list(progress.messages), str(progress.resume_checkpoint))
        user_seq = progress.messages[0].seq
        for row in progress.messages[1:]:
            if row.role == Message.Role.ASSISTANT:
                self.calls += 1
                calls = tuple(_call_from(c) for c in row.metadata.get("tool_calls", []))
                self.exchange.append(ChatMessage(row.role, row.content, calls))
            elif row.role == Message.Role.TOOL:
                self.exchange.append(
                    ChatMessage(row.role, row.content, tool_call_id=row.metadata["tool_call_id"])
                )
        kept = [m for m in memory.messages if isinstance(m.seq, int) and m.seq < user_seq]
        return replace(
            memory,
            messages=kept,
            task_state=progress.task_state,
            checkpoint_id=str(progress.resume_checkpoint),
        )

    def _replay(self, rows: list[Message]) -> TurnResult:
        """The turn already finished (e.g. the recovery task completed it): its result."""
        reply = rows[-1]
        run_ended(self.run_row, Run.Status.COMPLETED, user_message=rows[0], assistant_message=reply)
        return TurnResult(Outcome.COMPLETED, rows[0], reply, None, None, 0)


def _call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def _call_from(data: dict[str, Any]) -> ToolCall:
    return ToolCall(id=data["id"], name=data["name"], arguments=data.get("arguments", {}))


def _in_context(role: str, content: str) -> bool:
    """Working memory holds the conversation: user messages and assistant text (tool
    exchanges stay in the turn that made them). The rebuild applies the same rule."""
    return role in (Message.Role.USER, Message.Role.ASSISTANT) and bool(content)


def _memory_after(
    context: WorkingMemory,
    written: list[Message],
    new: list[NewMessage],
    task_state: dict[str, Any],
    user: WorkingMessage,
) -> WorkingMemory:
    """Working memory after writing `new`, whose messages carry SeqRefs until the write
    returns their seqs (`WorkingMemory.resolved`)."""
    # The context's user message is either among `written` or among `new`.
    previous = [m for m in context.messages if isinstance(m.seq, int) and m.seq != user.seq]
    turn = [
        WorkingMessage(m.seq, m.role, m.content, m.token_count)
        for m in written
        if _in_context(m.role, m.content) and m.status != Message.Status.ROLLED_BACK
    ]
    fresh = [
        WorkingMessage(SeqRef(i), m.role, m.content, m.token_count)
        for i, m in enumerate(new)
        if _in_context(m.role, m.content) and m.status != Message.Status.ROLLED_BACK
    ]
    return WorkingMemory(
        [*previous, *turn, *fresh], task_state, context.high_water_seq, context.checkpoint_id
    )


def _mark_rolled_back(rows: list[Message]) -> None:
    if rows:
        Message.objects.filter(pk__in=[r.pk for r in rows]).update(
            status=Message.Status.ROLLED_BACK
        )
        for row in rows:
            row.status = Message.Status.ROLLED_BACK


def _frames_of(write: _Write) -> list[tuple[str, dict[str, Any]]]:
    """The frames announcing a write, published in one round trip. Payloads are nested: a
    frame's own `seq` is the session's frame number, a message's `seq` its place in the
    conversation."""
    frames: list[tuple[str, dict[str, Any]]] = [
        ("message", {"message": message_payload(row)}) for row in write.rows
    ]
    if write.checkpoint is not None:
        frames.append(("checkpoint", {"checkpoint": checkpoint_payload(write.checkpoint)}))
    return frames


def _run_frame(run: Run) -> tuple[str, dict[str, Any]]:
    """The `run` frame: the run's new status (and what it waits for)."""
    payload: dict[str, Any] = {"status": run.status}
    if run.status == Run.Status.REQUIRES_ACTION:
        payload["required_action"] = run.required_action
        payload["expires_at"] = run.expires_at.isoformat() if run.expires_at else None
    if run.error:
        payload["error"] = run.error
    return ("run", payload)


_END_DETAILS = {
    "interrupted": "A newer message interrupted the run.",
    "rolled_back": "A newer message rolled the run back.",
    "cancelled": "The run was cancelled.",
}


def _awaiting(call: ToolCall, tool: Tool) -> dict[str, Any]:
    """A call in a run's `required_action`, with who may answer it."""
    return {
        "id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "kind": tool.kind,
        "approval": tool.approval,
    }


def _unanswered(rows: list[Message]) -> list[tuple[int, ToolCall]]:
    """The calls of the turn's last assistant message that have no result yet, with their
    position in it (a waiting turn's pending calls)."""
    answered: set[str] = set()
    for row in reversed(rows):
        if row.role == Message.Role.TOOL:
            answered.add(row.metadata.get("tool_call_id", ""))
        elif row.role == Message.Role.ASSISTANT:
            calls = row.metadata.get("tool_calls", [])
            return [
                (position, _call_from(call))
                for position, call in enumerate(calls)
                if call["id"] not in answered
            ]
    return []


def _statuses(cancelled: str | None) -> tuple[str, str]:
    """The turn's outcome and its reply's status (the rest of the turn's messages are
    marked by the outcome itself: all rolled back, or left active)."""
    if cancelled == "rollback":
        return Outcome.ROLLED_BACK, Message.Status.ROLLED_BACK
    if cancelled == "interrupt":
        return Outcome.INTERRUPTED, Message.Status.INTERRUPTED
    if cancelled == "cancel":
        return Outcome.CANCELLED, Message.Status.INTERRUPTED
    return Outcome.COMPLETED, Message.Status.ACTIVE


def _usage_meta(generation: _Generation) -> dict[str, Any]:
    if generation.usage is None:
        return {"model": generation.model}
    return {
        "model": generation.model,
        "prompt_tokens": generation.usage.prompt_tokens,
        "completion_tokens": generation.usage.completion_tokens,
    }


__all__ = [
    "TASK_STATE_TOOL",
    "LeaseLost",
    "Outcome",
    "TurnFailed",
    "TurnResult",
    "turn_run",
]
