"""The session websocket: `/ws/sessions/{session_id}/`.

A router: connect authenticates (API key header or client token), checks the origin and
the session's tenant, joins the session's group; `receive_json` dispatches on `type`; each
channel-layer event has one handler. Turns run through the same turn service as REST, in a
worker thread, so this socket keeps forwarding frames while its own turn streams.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import close_old_connections
from django.http.request import validate_host

from agentplatform.core import rls
from agentplatform.core.audit import Actor
from agentplatform.infra import redis_keys
from agentplatform.infra.redis import get_redis
from agents import live, runs
from agents.client_tokens import client_token_verify
from agents.conf import agents_settings
from agents.engine.turn import TURN_FAILURES, TurnResult
from agents.entry import (
    Sink,
    client_message_id_validate,
    client_message_key,
    content_validate,
    turn_begin,
)
from agents.errors import (
    ContentInvalid,
    KeyInProgress,
    KeyUsedForAnotherMessage,
    SessionNotFound,
    TurnRefused,
)
from agents.models import Run, Session
from agents.selectors import session_find
from agents.tools import Approval

CLOSE_BAD_CREDENTIAL = 4401
CLOSE_BAD_ORIGIN = 4403
CLOSE_NOT_FOUND = 4404
LISTENER_TTL_SECONDS = 86_400


class SessionConsumer(AsyncWebsocketConsumer):
    session: Session | None = None

    async def connect(self) -> None:
        self.session = None
        self.last_seq = 0
        self.sent_at: deque[float] = deque()
        self.turns: set[asyncio.Task[None]] = set()
        # Row-level security: nothing visible until a credential names the tenant. The scope
        # lives in this connection's task context, so every later handler and turn has it.
        rls.enter(rls.NO_TENANT)
        refusal = await self._subscribe()
        # A close code reaches the client only after the handshake is accepted; and the
        # handshake completes only once the socket listens, so a client that sees it open
        # misses no frame published after that.
        await self.accept()
        if refusal is not None:
            await self.close(code=refusal)

    async def _subscribe(self) -> int | None:
        """Authenticate, find the session and join its listeners; a close code on refusal."""
        if not _origin_allowed(self.scope):
            return CLOSE_BAD_ORIGIN
        tenant_id, scoped_session = await _authenticate(self.scope)
        if tenant_id is None:
            return CLOSE_BAD_CREDENTIAL
        rls.enter(rls.tenant_scope_of(tenant_id))
        session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        if scoped_session is not None and scoped_session != session_id:
            return CLOSE_NOT_FOUND  # a token for another session
        self.session = await _load_session(tenant_id, session_id)
        if self.session is None:
            return CLOSE_NOT_FOUND
        self.group = live.group_name(self.session.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await _listener(self.session.pk, self.channel_name, add=True)
        return None

    async def disconnect(self, code: int) -> None:
        if self.session is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await _listener(self.session.pk, self.channel_name, add=False)
        # Running turns go on in their threads: a dropped socket loses nothing.

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `aclose_old_connections()`: that is a thread hop
        before every frame and channel-layer event (~120 us of CPU each), and nothing here
        uses the ORM on the event loop: each piece of database work runs in a worker thread
        that closes its connection itself (`_turn_in_thread`, `_act_in_thread`, and
        `database_sync_to_async`, which closes before and after)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- client -> server ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.session is None:
            return
        if bytes_data is not None or text_data is None:
            await self._error("bad_frame", "Frames are JSON text.")
            return
        if len(text_data.encode()) > agents_settings().WS_MAX_FRAME_BYTES:
            await self._error("frame_too_large", "The frame is over the size limit.")
            return
        try:
            frame = json.loads(text_data)
        except json.JSONDecodeError:
            await self._error("bad_frame", "The frame is not valid JSON.")
            return
        if not isinstance(frame, dict):
            await self._error("bad_frame", "A frame is a JSON object with a `type`.")
            return
        handler = {
            "message": self.on_message,
            "resume": self.on_resume,
            "ping": self.on_ping,
            "action": self.on_action,
        }.get(frame.get("type"))  # type: ignore[arg-type]
        if handler is None:
            await self._error("unknown_type", f"Unknown frame type {frame.get('type')!r}.")
            return
        await handler(frame)

    async def on_message(self, frame: dict[str, Any]) -> None:
        content, client_id = frame.get("content"), frame.get("client_message_id")
        try:  # early, so that a bad frame costs no thread and no rate
            content_validate(content)
            client_message_id_validate(client_id)
        except ContentInvalid as error:
            await self._error("bad_message", str(error), client_message_id=client_id)
            return
        if not self._within_rate():
            await self._error("rate_limited", "Too many messages; slow down.", client_id)
            return
        task = asyncio.create_task(self._run_turn(str(content), client_id))
        self.turns.add(task)
        task.add_done_callback(self.turns.discard)

    async def on_action(self, frame: dict[str, Any]) -> None:
        """The end user's decision on a call waiting for them (the chat page's card):
        `{"type": "action", "run", "tool_call_id", "approve", "reason"}`."""
        run_id, call_id, approve = frame.get("run"), frame.get("tool_call_id"), frame.get("approve")
        reason = frame.get("reason", "")
        if not all(isinstance(v, str) and v for v in (run_id, call_id)) or not isinstance(
            approve, bool
        ):
            await self._error("bad_frame", "An action names a run and a tool_call_id, and approve.")
            return
        if not isinstance(reason, str) or len(reason) > 2000:
            await self._error("bad_frame", "reason must be a string of at most 2000 characters.")
            return
        assert self.session is not None
        answer = runs.Answer(str(call_id), approve=approve, reason=reason)
        refused = await database_sync_to_async(_act_in_thread, thread_sensitive=False)(
            self.session, str(run_id), answer
        )
        if refused is not None:
            await self._error(*refused)

    async def on_resume(self, frame: dict[str, Any]) -> None:
        after = frame.get("after_seq")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            await self._error("bad_frame", "after_seq must be a non-negative integer.")
            return
        assert self.session is not None
        self.last_seq = after
        for seq, text in await _frames_after(self.session.pk, after):
            await self._forward(seq, text)

    async def on_ping(self, frame: dict[str, Any]) -> None:
        assert self.session is not None
        seq = await _current_seq(self.session.pk)
        await self.send(text_data=json.dumps({"type": "pong", "seq": seq}))

    # --- channel layer -> client ---------------------------------------------------------

    async def session_frames(self, event: dict[str, Any]) -> None:
        for seq, text in event["frames"]:
            await self._forward(int(seq), text)

    # --- helpers --------------------------------------------------------------------------

    async def _forward(self, seq: int, text: str) -> None:
        """Send a session frame once, in order: anything at or below last_seq was sent. A
        frame past a gap (its predecessors took the slower path, through the group) first
        brings the missing ones from the session's stream."""
        if seq <= self.last_seq:
            return
        if self.last_seq and seq > self.last_seq + 1:
            assert self.session is not None
            for missed, missed_text in await _frames_after(self.session.pk, self.last_seq):
                if missed >= seq:
                    break
                self.last_seq = missed
                await self._send_text(missed_text)
        self.last_seq = seq
        await self._send_text(text)

    async def _send_text(self, text: str) -> None:
        # The frames are JSON text already (agents.live): straight to the ASGI send, without
        # the two wrappers of `self.send` per frame.
        await self.base_send({"type": "websocket.send", "text": text})

    async def _error(self, code: str, detail: str, client_message_id: Any = None) -> None:
        """An error for this socket only (a bad frame); it carries the session's seq so far."""
        seq = await _current_seq(self.session.pk) if self.session else 0
        frame = {"type": "error", "code": code, "detail": detail, "seq": seq}
        if isinstance(client_message_id, str):
            frame["client_message_id"] = client_message_id
        await self.send(text_data=json.dumps(frame))

    async def _drain(self, outbox: asyncio.Queue[tuple[live.Numbered, bool] | None]) -> None:
        """This socket's turn's frames: to this socket straight away, in the order they come;
        to the session group too, in one group_send for whatever piled up, when another
        socket listens (this one drops them there: already sent)."""
        while True:
            first = await outbox.get()
            items, done = [first], first is None
            while not outbox.empty():
                item = outbox.get_nowait()
                done = done or item is None
                items.append(item)
            batch, others = [], False
            for item in items:
                if item is not None:
                    batch += item[0]
                    others = others or item[1]
            for seq, text in batch:
                await self._forward(seq, text)
            if batch and others:
                event = {"type": "session.frames", "frames": [list(f) for f in batch]}
                await self.channel_layer.group_send(self.group, event)
            if done:
                return

    def _within_rate(self) -> bool:
        conf, now = agents_settings(), time.monotonic()
        while self.sent_at and now - self.sent_at[0] > conf.WS_RATE_WINDOW_SECONDS:
            self.sent_at.popleft()
        if len(self.sent_at) >= conf.WS_RATE_MESSAGES:
            return False
        self.sent_at.append(now)
        return True

    async def _run_turn(self, content: str, client_message_id: str | None) -> None:
        assert self.session is not None
        # The turn's thread hands its frames to this event loop, which sends them here and,
        # when another socket listens, to the group: no thread waits on the loop.
        loop, outbox = (
            asyncio.get_running_loop(),
            asyncio.Queue[tuple[live.Numbered, bool] | None](),
        )
        drain = asyncio.create_task(self._drain(outbox))
        fanout = _SocketFanout(self.channel_name, loop, outbox)

        try:
            # A plain executor hop (the context copied: the tenant's row-level security scope
            # goes along): database_sync_to_async adds two close_old_connections and asgiref's
            # context bookkeeping to every message; `_turn_in_thread` closes its own.
            refused = await asyncio.to_thread(
                _turn_in_thread, self.session, content, client_message_id, fanout
            )
        finally:
            fanout.release()
            outbox.put_nowait(None)
            await drain
        if refused is not None:
            code, detail = refused
            await self._error(code, detail, client_message_id)


# The text every `run` frame starts with (agents.live serializes type first, compactly).
_RUN_FRAME = '{"type":"run"'


@dataclass(frozen=True)
class _SocketFanout:
    """The fan-out of a turn started on a socket (agents.live.Fanout): from the turn's
    thread to the socket's event loop.

    A batch holding the turn's `run` frame waits for `release()`, called once the turn's
    thread has returned: the turn publishes `run` before its client_message_id is recorded
    as done, and a client that resends the id on seeing `run` must be told `duplicate`, not
    `in_progress`."""

    origin: str
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue[tuple[live.Numbered, bool] | None]
    held: list[tuple[live.Numbered, bool]] = field(default_factory=list)

    def __call__(self, frames: live.Numbered, others: bool) -> None:
        if self.held or any(text.startswith(_RUN_FRAME) for _, text in frames):
            self.held.append((frames, others))  # in order: nothing overtakes a held batch
            return
        self.loop.call_soon_threadsafe(self.outbox.put_nowait, (frames, others))

    def release(self) -> None:
        """On the event loop, after the turn's thread returned."""
        for item in self.held:
            self.outbox.put_nowait(item)
        self.held.clear()


# How refusals read on the socket: (code, detail); None keeps the error's own detail.
WS_REFUSALS: dict[type[TurnRefused], tuple[str, str | None]] = {
    KeyUsedForAnotherMessage: (
        "client_message_id_reused",
        "This client_message_id was used for another message.",
    ),
    KeyInProgress: ("in_progress", "This message is still being processed; retry shortly."),
}


def _turn_in_thread(
    session: Session, content: str, client_message_id: str | None, fanout: live.Fanout
) -> tuple[str, str] | None:
    """Run the turn through the one door, once per client_message_id (the websocket's
    idempotency key): a resend after a reconnect never runs a turn twice. Returns
    (code, detail) when it did not run; a turn that ran and failed published its own frame.

    The thread's database connection goes back to the pool after every message: kept by an
    idle thread of the loop's executor (up to 32 of them), it could leave the pool's 20
    (DB_POOL_MAX_SIZE) to nobody else; the pool's check on checkout costs no round trip."""
    try:
        key = client_message_key(session, client_message_id, content) if client_message_id else None
        pending = turn_begin(
            session=session, content=content, key=key, client_message_id=client_message_id
        )
        if pending.replay is not None:
            return "duplicate", "This client_message_id already ran; see its frames."
        pending.run(Sink(fanout=fanout), record=_ws_record)
    except TurnRefused as error:
        code, detail = WS_REFUSALS.get(type(error), (error.code, None))
        return code, detail or str(error)
    except TURN_FAILURES:
        pass
    finally:
        close_old_connections()
    return None


def _act_in_thread(session: Session, run_id: str, answer: runs.Answer) -> tuple[str, str] | None:
    """Record the end user's decision; (code, detail) when it was refused. The trail names
    the session, not the person (the end user's id is the tenant's own data)."""
    try:
        run = Run.objects.filter(pk=run_id, session=session).first()
        if run is None:
            return "not_found", "No run with this id on this session."
        actor = Actor("end_user", f"session:{session.pk}")
        runs.run_act(run=run, answers=[answer], decided_by=Approval.END_USER, actor=actor)
    except (ValueError, DjangoValidationError):
        return "not_found", "No run with this id on this session."
    except runs.RunConflict as error:
        return error.code, str(error)
    except runs.ActionInvalid as error:
        return "bad_action", str(error)
    finally:
        close_old_connections()
    return None


def _ws_record(result: TurnResult) -> dict[str, Any]:
    return {"user_seq": result.user_message.seq, "outcome": result.outcome}


def _origin_allowed(scope: dict[str, Any]) -> bool:
    """Browsers send Origin: it must be one of ALLOWED_HOSTS. Programs send none and are
    authenticated by their API key or token alone."""
    origin = next((v for k, v in scope.get("headers", []) if k == b"origin"), None)
    if origin is None:
        return True
    host = urlparse(origin.decode("latin-1")).hostname or ""
    return bool(validate_host(host, settings.ALLOWED_HOSTS))


async def _authenticate(scope: dict[str, Any]) -> tuple[str | None, str | None]:
    """(tenant id, the session a client token is scoped to) or (None, None)."""
    from agentplatform.http.authentication import bearer_token

    header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
    if header is not None:
        token = bearer_token(header)
        tenant_id = await _tenant_for_key(token) if token else None
        return tenant_id, None
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    client_token = (query.get("token") or [""])[0]
    scope_ = client_token_verify(client_token) if client_token else None
    if scope_ is None:
        return None, None
    return scope_.tenant_id, scope_.session_id


@database_sync_to_async
def _tenant_for_key(raw: str) -> str | None:
    from agentplatform.core.services import api_key_authenticate

    key = api_key_authenticate(raw)
    return str(key.tenant_id) if key else None


@database_sync_to_async
def _load_session(tenant_id: str, session_id: str) -> Session | None:
    try:
        return session_find(id=session_id, tenant_ids=[tenant_id], active_tenant=True)
    except SessionNotFound:
        return None


async def _listener(session_id: Any, channel: str, *, add: bool) -> None:
    def update() -> None:
        client = get_redis()
        key = redis_keys.listeners(session_id)
        if add:
            client.sadd(key, channel)
            client.expire(key, LISTENER_TTL_SECONDS)
        else:
            client.srem(key, channel)

    await asyncio.to_thread(update)


async def _frames_after(session_id: Any, after: int) -> list[tuple[int, str]]:
    return await asyncio.to_thread(live.frames_after, session_id, after)


async def _current_seq(session_id: Any) -> int:
    return await asyncio.to_thread(live.current_seq, session_id)
