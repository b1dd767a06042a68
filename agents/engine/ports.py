"""What the turn engine needs from the state stores, as types and a protocol.

The agents app drives turns; the memory app stores their state. The engine reaches the
store through `state_backend()` (a dotted path in AGENTS["STATE_BACKEND"], like Django's
EMAIL_BACKEND), so dependencies keep pointing one way: memory -> agents -> agentplatform.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from django.utils.module_loading import import_string

from agents.conf import agents_settings
from agents.llm.base import ChatMessage
from agents.models import Agent, Message, Session
from agents.services import Appended, CompanionUpdate, NewMessage, SeqRef


@dataclass(frozen=True)
class CheckpointRequest:
    """The checkpoint a turn's write makes, stored by the state backend with the messages.
    `memory` is the working memory after the write, in which the write's own messages still
    have SeqRefs; so does `turn_first_seq` (the turn's user message) when it is one of them."""

    kind: str
    memory: WorkingMemory
    metadata: dict[str, Any]
    turn_key: str
    turn_open: bool
    turn_first_seq: int | SeqRef
    side_effects: list[dict[str, Any]]


class CheckpointKind:
    """The checkpoints the engine asks its state backend to write (the backend stores them:
    memory.models.Checkpoint.Kind takes these values)."""

    LLM_CALL = "llm_call"  # after an LLM call that asked for tools (every_llm_call)
    TURN = "turn"  # at the end of a turn (every_turn)
    TRANSITION = "transition"  # when the task state's `step` changed (transitions)
    MANUAL = "manual"  # asked for by the agent (request_checkpoint) or an operator's fork


@dataclass
class WorkingMessage:
    # A SeqRef until the write that appends the message returns its seq (an engine's
    # working memory holds one between building a write and its result; a stored one never).
    seq: int | SeqRef
    role: str
    content: str
    tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "role": self.role, "content": self.content, "tokens": self.tokens}


@dataclass
class WorkingMemory:
    """The live part of a conversation: the newest messages that fit the token budget."""

    messages: list[WorkingMessage] = field(default_factory=list)
    task_state: dict[str, Any] = field(default_factory=dict)
    high_water_seq: int = 0
    checkpoint_id: str | None = None  # the session's latest checkpoint (the next one's parent)

    @property
    def tokens(self) -> int:
        return sum(message.tokens for message in self.messages)

    def written_seqs(self) -> list[int]:
        """The seqs of the messages already written, in order."""
        return [m.seq for m in self.messages if isinstance(m.seq, int)]

    def resolved(self, rows: list[Message]) -> WorkingMemory:
        """This memory once a write appended `rows`: each SeqRef becomes its row's seq."""
        messages = [
            replace(m, seq=rows[m.seq.index].seq) if isinstance(m.seq, SeqRef) else m
            for m in self.messages
        ]
        high_water = max([self.high_water_seq, *(row.seq for row in rows)])
        return replace(self, messages=messages, high_water_seq=high_water)

    def as_dict(self) -> dict[str, Any]:
        # Messages as [seq, role, content, tokens]: the whole value is rewritten every turn,
        # and lists encode faster and smaller than dicts with repeated keys.
        return {
            "messages": [[m.seq, m.role, m.content, m.tokens] for m in self.messages],
            "task_state": self.task_state,
            "high_water_seq": self.high_water_seq,
            "checkpoint_id": self.checkpoint_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkingMemory:
        return cls(
            # Dicts: the format written before lists (a working memory lives up to its TTL).
            messages=[
                WorkingMessage(**item) if isinstance(item, dict) else WorkingMessage(*item)
                for item in data.get("messages", [])
            ],
            task_state=data.get("task_state", {}),
            high_water_seq=int(data.get("high_water_seq", 0)),
            checkpoint_id=data.get("checkpoint_id"),
        )


@dataclass
class WorkingMemoryRead:
    """A working-memory read made within an open Redis batch (with the turn's lease):
    `memory` once the batch was sent (`done`), None for a miss."""

    memory: WorkingMemory | None = None
    done: bool = False


@dataclass
class ContextExtras:
    """What the memory tiers add to a turn's context, and the record of it."""

    messages: list[ChatMessage] = field(default_factory=list)
    tokens: int = 0
    record: dict[str, Any] = field(default_factory=dict)
    compacted_through: int = 0  # the session's messages up to this seq are summarised


@dataclass
class TurnProgress:
    """What a turn already begun under the same key left behind: its messages in seq order
    (the user's first) and, when its latest checkpoint is open, where to resume from."""

    messages: list[Message]
    resume_checkpoint: uuid.UUID | None = None
    task_state: dict[str, Any] = field(default_factory=dict)

    @property
    def resumable(self) -> bool:
        return self.resume_checkpoint is not None


@dataclass(frozen=True)
class CheckpointRecord:
    id: uuid.UUID
    kind: str
    high_water_seq: int


class ClaimRead(Protocol):
    """What the lease's claim statement also reads (agents.engine.concurrency): `columns`,
    scalar SQL expressions over `params`, whose values it hands to `take`."""

    @property
    def columns(self) -> str: ...

    @property
    def params(self) -> dict[str, Any]: ...

    def take(self, values: tuple[Any, ...]) -> None: ...


class StateBackend(Protocol):
    def load_working_memory(
        self, *, session: Session, agent: Agent, read: WorkingMemoryRead | None = None
    ) -> WorkingMemory:
        """From Redis (or `read`, when done); rebuilt from PostgreSQL (and re-cached) on a
        miss."""
        ...

    def read_working_memory(self, *, session: Session) -> WorkingMemoryRead:
        """Ask Redis for the working memory in the open batch (agentplatform.infra.redis)."""
        ...

    def save_working_memory(
        self, *, session: Session, agent: Agent, memory: WorkingMemory
    ) -> None: ...

    def fit_working_memory(self, *, memory: WorkingMemory, budget: int) -> WorkingMemory:
        """Keep the newest messages whose tokens fit `budget` (stop at the first misfit)."""
        ...

    def context_extras(
        self,
        *,
        session: Session,
        agent: Agent,
        query: str,
        budget: int,
        memory: WorkingMemory,
        read: ClaimRead | None = None,
    ) -> ContextExtras:
        """Summaries and semantic memories for this turn, within `budget` tokens; `read` is
        what `context_read` asked the claim to read (used when it was for this context)."""
        ...

    def context_read(self, *, session: Session, memory: WorkingMemory) -> ClaimRead:
        """What `context_extras` will read from PostgreSQL for a context like `memory`, to
        be read by the lease's claim instead: one round trip fewer."""
        ...

    def after_turn(
        self,
        *,
        session: Session,
        agent: Agent,
        messages: list[Message],
        memory: WorkingMemory,
        extras: ContextExtras,
    ) -> None:
        """Inside the turn's transaction: schedule what follows it (extraction,
        compaction) for after the commit."""
        ...

    def turn_write(
        self,
        *,
        session: Session,
        fence: uuid.UUID,
        messages: list[NewMessage],
        checkpoint: CheckpointRequest | None,
        update: CompanionUpdate | None = None,
    ) -> tuple[Appended, uuid.UUID | None]:
        """Append a turn's messages and, in the same statement, its checkpoint (the backend
        owns how) and `update` (the run the write ends); returns what was appended and the
        checkpoint's id. Raises StaleLease when `fence` no longer holds the session's lease:
        then nothing is written."""
        ...

    def turn_progress(self, *, session: Session, turn_key: str) -> TurnProgress | None:
        """The turn of `session` begun under `turn_key`, if any."""
        ...

    def open_turns(self, *, since: datetime, until: datetime) -> list[tuple[uuid.UUID, str]]:
        """(session id, turn key) of turns whose latest checkpoint, written in the window,
        is still open: cut off between two LLM calls."""
        ...


@functools.cache
def _backend(path: str) -> StateBackend:
    backend: StateBackend = import_string(path)()
    return backend


def state_backend() -> StateBackend:
    return _backend(agents_settings().STATE_BACKEND)
