"""Live frames of a session: numbered, kept in a Redis Stream, fanned out to open sockets.

Every frame a session emits (`accepted`, `queued`, `token`, `message`, `checkpoint`,
`rollback`, `error`) gets the next per-session `seq` and is appended to the session's
Redis Stream (capped, with a TTL) in one atomic step, so `resume` replays exactly what a
client missed from any server instance. Then it goes to the channel-layer group of the
session, skipped when no socket listens. Token deltas are batched: one frame per
TOKEN_FLUSH_SECONDS, since each fan-out costs far more than a delta (STACK.md gotcha 11).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from agentplatform import keys
from agentplatform.redis import get_redis
from agents.conf import agents_settings

LocalSink = Callable[[str, dict[str, Any]], None]
SEQ_TTL_SECONDS = 30 * 86_400

_PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local frame = ARGV[1] .. ',"seq":' .. seq .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-1', 'f', frame)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {seq, frame, redis.call('SCARD', KEYS[3])}
"""


def group_name(session_id: uuid.UUID | str) -> str:
    return f"session.{session_id}"


Fanout = Callable[[int, str], None]


def group_send_now(session_id: uuid.UUID | str) -> Fanout:
    """Fan-out from synchronous code (REST turns): one group_send per frame."""

    def send(seq: int, text: str) -> None:
        layer = get_channel_layer()
        if layer is not None:
            event = {"type": "session.frames", "frames": [[seq, text]]}
            async_to_sync(layer.group_send)(group_name(session_id), event)

    return send


def publish(
    session_id: uuid.UUID | str,
    frame_type: str,
    payload: dict[str, Any],
    fanout: Fanout | None = None,
) -> dict:
    """Number, store and fan out one frame; returns it (with its `seq`).

    `fanout` delivers it to the session's sockets when any listens (default: a group_send
    right away; the websocket consumer passes one that batches on its event loop)."""
    conf = agents_settings()
    body = json.dumps({"type": frame_type, **payload}, separators=(",", ":"), default=str)
    seq, frame, listening = cast(
        list[Any],
        get_redis().eval(
            _PUBLISH,
            3,
            keys.frame_seq(session_id),
            keys.frame_stream(session_id),
            keys.listeners(session_id),
            body[:-1],
            conf.FRAME_STREAM_MAXLEN,
            SEQ_TTL_SECONDS,
            conf.FRAME_RETENTION_SECONDS,
        ),
    )
    text = frame.decode() if isinstance(frame, bytes) else frame
    if int(listening):
        (fanout or group_send_now(session_id))(int(seq), text)
    return cast(dict, json.loads(text))


def frames_after(session_id: uuid.UUID | str, after_seq: int) -> list[tuple[int, str]]:
    """The stored frames with seq > after_seq, in order (as JSON text)."""
    entries = cast(
        list[Any], get_redis().xrange(keys.frame_stream(session_id), min=f"{after_seq + 1}-0")
    )
    return [(int(entry_id.split(b"-")[0]), fields[b"f"].decode()) for entry_id, fields in entries]


def current_seq(session_id: uuid.UUID | str) -> int:
    value = get_redis().get(keys.frame_seq(session_id))
    return int(cast(bytes, value)) if value else 0


class FramePublisher:
    """The emit function of one turn: publishes its frames, batching token deltas.

    `local` also receives every published frame (the SSE response of the same turn).
    """

    def __init__(
        self,
        session_id: uuid.UUID | str,
        local: LocalSink | None = None,
        fanout: Fanout | None = None,
    ) -> None:
        self.session_id = session_id
        self.local = local
        self.fanout = fanout
        self.flush_seconds = agents_settings().TOKEN_FLUSH_SECONDS
        self._pending: list[str] = []
        self._flushed_at = time.monotonic()
        self.extra: dict[str, Any] = {}  # e.g. client_message_id, added to turn frames

    def __call__(self, frame_type: str, payload: dict[str, Any]) -> None:
        if frame_type == "token":
            self._pending.append(payload["delta"])
            if time.monotonic() - self._flushed_at >= self.flush_seconds:
                self.flush()
            return
        self.flush()
        self._send(frame_type, payload)

    def flush(self) -> None:
        if self._pending:
            delta, self._pending = "".join(self._pending), []
            self._send("token", {"delta": delta})
        self._flushed_at = time.monotonic()

    def _send(self, frame_type: str, payload: dict[str, Any]) -> None:
        frame = publish(self.session_id, frame_type, {**payload, **self.extra}, self.fanout)
        if self.local is not None:
            self.local(frame_type, frame)
