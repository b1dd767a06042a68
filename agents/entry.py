"""One door for a turn, for every transport.

REST, server-sent events, the websocket, the `chat` command (and background runs) all start
a turn here: the session is found once, the content validated once, the transport's
idempotency key claimed, kept alive while the turn runs and completed or released when it
ends. The session comes from `agents.selectors.session_find`. What can go wrong before a
turn runs is an `agents.errors.TurnRefused` with a `code`; what can go wrong while it runs is
one of the engine's `TURN_FAILURES` (the turn published its own `error` frame). Each
transport renders both its own way (agents.api.errors for HTTP).

    pending = turn_begin(session=session, content=content, key=key)   # may raise TurnRefused
    if pending.replay is None:
        result = pending.run(Sink(emit=emit), record=serialize)        # may raise a failure
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentplatform.http import idempotency
from agentplatform.http.idempotency import IdempotencyKey, KeyReused
from agents.conf import agents_settings
from agents.engine.concurrency import QueueTimeout, RunCancelled, SessionBusy
from agents.engine.turn import Emit, TurnResult, turn_run
from agents.errors import ContentInvalid, KeyInProgress, KeyUsedForAnotherMessage
from agents.live import Fanout
from agents.models import Run, Session

MAX_CLIENT_MESSAGE_ID = 100
# The turn failures that come before a turn writes anything: its key can be used afresh.
REFUSED_BEFORE_RUNNING = (SessionBusy, QueueTimeout, RunCancelled)


def content_validate(content: object) -> str:
    """The one check of a message's content, whichever transport brought it."""
    if not isinstance(content, str) or not content.strip():
        raise ContentInvalid("content must be a non-empty string")
    limit = agents_settings().MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise ContentInvalid(f"content must be at most {limit} characters")
    return content


def client_message_id_validate(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_CLIENT_MESSAGE_ID):
        raise ContentInvalid(f"client_message_id must be a string of <= {MAX_CLIENT_MESSAGE_ID}.")
    return value


def client_message_key(session: Session, client_message_id: str, content: str) -> IdempotencyKey:
    """A websocket message's idempotency key: its client_message_id, per session, so a resend
    after a reconnect never runs a turn twice."""
    return IdempotencyKey(
        key=f"ws:{session.pk}:{client_message_id}",
        method="WS",
        path=f"/ws/sessions/{session.pk}/",
        fingerprint=hashlib.sha256(content.encode()).hexdigest(),
    )


@dataclass(frozen=True)
class Sink:
    """Where a turn's frames go besides the session's stream: `emit` gets each one (an SSE
    response, the CLI), `fanout` hands them to a websocket's event loop."""

    emit: Emit | None = None
    fanout: Fanout | None = None


Record = Callable[[TurnResult], Any]


@dataclass
class PendingTurn:
    """A turn admitted through the door: validated, its key claimed (or its first result
    found, `replay`). `run` it, in this thread or another, or `abandon` it."""

    session: Session
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    client_message_id: str | None = None
    record_id: int | None = None
    turn_key: str | None = None
    run_row: Run | None = None  # a background run's row; else the turn opens its own run
    new_key: bool = False  # its key was never used: no earlier attempt to resume
    replay: tuple[int, Any] | None = None
    recorded: Any = None  # what `record` made of the result: the body a retry gets

    def run(self, sink: Sink = Sink(), *, record: Record | None = None) -> TurnResult:
        """Run the turn, keeping the key's lock alive while it runs (from this thread);
        complete the key with `record(result)` (the body a retry gets), or release it if
        the turn fails or is cut off, so that a retry may run it."""
        assert self.replay is None, "a replayed turn does not run again"
        with idempotency.running(self.record_id):
            try:
                result = turn_run(
                    session=self.session,
                    content=self.content,
                    emit=sink.emit,
                    metadata=self.metadata,
                    client_message_id=self.client_message_id,
                    fanout=sink.fanout,
                    turn_key=self.turn_key,
                    run=self.run_row,
                    new_key=self.new_key,
                )
            except BaseException as error:
                # Refused before it ran, the turn wrote nothing: its key is forgotten. Else it
                # may have written part of itself, which a retry under the key resumes.
                self.abandon(forget=isinstance(error, REFUSED_BEFORE_RUNNING))
                raise
        self.recorded = record(result) if record is not None else {"outcome": result.outcome}
        if self.record_id is not None:
            idempotency.idempotency_complete(self.record_id, 201, self.recorded)
        return result

    def abandon(self, *, forget: bool = True) -> None:
        if self.record_id is not None:
            idempotency.idempotency_release(self.record_id, forget=forget)


def turn_begin(
    *,
    session: Session,
    content: object,
    key: IdempotencyKey | None = None,
    metadata: dict[str, Any] | None = None,
    client_message_id: str | None = None,
    run: Run | None = None,
) -> PendingTurn:
    """Validate the content and claim `key`. A key that already ran returns a PendingTurn
    whose `replay` holds the first result; a retry of a turn cut off between LLM calls
    resumes it (its `turn_key` is the key's digest). A background `run` is resumed under
    its own turn key."""
    text = content_validate(content)
    pending = PendingTurn(session, text, dict(metadata or {}), client_message_id)
    if run is not None:
        pending.run_row, pending.turn_key = run, run.turn_key
    if key is None:
        return pending
    try:
        claim = idempotency.idempotency_claim(
            tenant=session.tenant,
            key=key.key,
            method=key.method,
            path=key.path,
            fingerprint=key.fingerprint,
        )
    except KeyReused as error:
        raise KeyUsedForAnotherMessage(str(error)) from None
    except idempotency.InProgress as error:
        raise KeyInProgress(str(error)) from None
    pending.record_id, pending.replay = claim.record_id, claim.replay
    pending.turn_key = idempotency.key_digest(session.tenant_id, key.key)
    pending.new_key = claim.created
    return pending
