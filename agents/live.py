"""Live frames of a session: numbered, kept in a Redis Stream, fanned out to open sockets.

Every frame a session emits (`accepted`, `queued`, `token`, `message`, `checkpoint`,
`rollback`, `error`) gets the next per-session `seq` and is appended to the session's
Redis Stream (capped, with a TTL) in one atomic step, so `resume` replays exactly what a
client missed from any server instance. The socket a turn came from gets its frames straight
from the turn; the session's channel-layer group gets them only when another socket listens
(the common case, one socket per session, costs no pub/sub round trip). Token deltas are
batched: one frame per TOKEN_FLUSH_SECONDS, since each fan-out costs far more than a delta
(a group_send took ~1.5 ms of server CPU per message when measured, against ~0.2 ms for the
echo itself).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from agentplatform.infra import jsontext, redis_keys
from agentplatform.infra.redis import Script, deferred, get_redis
from agents.conf import agents_settings

LocalSink = Callable[[str, dict[str, Any]], None]
SEQ_TTL_SECONDS = 30 * 86_400

# One call numbers and stores a batch of ARGV[5] frames: ARGV[6..] are frame bodies without
# their closing brace, each completed with its seq. It answers the first frame's seq and how
# many sockets listen besides ARGV[4], the channel of the socket the frames' turn came from
# ('' for none); the caller completes the frames the same way.
_PUBLISH = Script("""
local before = redis.call('INCRBY', KEYS[1], ARGV[5]) - ARGV[5]
redis.call('EXPIRE', KEYS[1], ARGV[2])
for i = 6, #ARGV do
  local seq = before + i - 5
  local frame = ARGV[i] .. ',"seq":' .. seq .. '}'
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-1', 'f', frame)
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
local others = redis.call('SCARD', KEYS[3])
if ARGV[4] ~= '' then
  others = others - redis.call('SISMEMBER', KEYS[3], ARGV[4])
end
return {before + 1, others}
""")


def group_name(session_id: uuid.UUID | str) -> str:
    return f"session.{session_id}"


Numbered = list[tuple[int, str]]  # frames as (seq, JSON text)


class Fanout(Protocol):
    """Where a turn's stored frames go next. `origin` is the channel of the socket the turn
    came from ("" for none): it gets every frame straight from the turn, so the session group
    (a pub/sub round trip through Redis and back) is used only when `others` listen."""

    @property
    def origin(self) -> str: ...

    def __call__(self, frames: Numbered, others: bool) -> None: ...


@dataclass(frozen=True)
class GroupSend:
    """Fan-out from synchronous code (REST turns, tasks): one group_send per batch, when any
    socket listens."""

    session_id: uuid.UUID | str
    origin: str = ""

    def __call__(self, frames: Numbered, others: bool) -> None:
        layer = get_channel_layer()
        if others and layer is not None:
            event = {"type": "session.frames", "frames": [list(frame) for frame in frames]}
            async_to_sync(layer.group_send)(group_name(self.session_id), event)


def publish(
    session_id: uuid.UUID | str,
    frame_type: str,
    payload: dict[str, Any],
    fanout: Fanout | None = None,
) -> dict:
    """Number, store and fan out one frame; returns it (with its `seq`).

    `fanout` delivers it to the session's sockets (default: a group_send right away when
    any listens; the websocket consumer passes one that batches on its event loop)."""
    return publish_many(session_id, [(frame_type, payload)], fanout)[0]


def publish_many(
    session_id: uuid.UUID | str,
    frames: list[tuple[str, dict[str, Any]]],
    fanout: Fanout | None = None,
) -> list[dict]:
    """Number, store and fan out several frames in one Redis round trip, in order."""
    return [cast(dict, jsontext.loads(text)) for text in _publish(session_id, frames, fanout)]


def _publish(
    session_id: uuid.UUID | str,
    frames: list[tuple[str, dict[str, Any]]],
    fanout: Fanout | None,
) -> list[str]:
    """`publish_many`, the frames as JSON text."""
    send: Fanout = fanout or GroupSend(session_id)
    keys, args, bodies = _publish_call(session_id, frames, send)
    return _delivered(cast(list[Any], _PUBLISH(keys, args)), bodies, send)


def publish_batched(
    session_id: uuid.UUID | str,
    frames: list[tuple[str, dict[str, Any]]],
    fanout: Fanout | None = None,
    then: Callable[[list[str]], None] | None = None,
) -> None:
    """`publish_many` within the open `write_batch()`: the frames are numbered, stored and
    fanned out when the batch is sent (right away outside one); `then` gets their text."""
    send: Fanout = fanout or GroupSend(session_id)
    keys, args, bodies = _publish_call(session_id, frames, send)

    def delivered(result: Any) -> None:
        texts = _delivered(cast(list[Any], result), bodies, send)
        if then is not None:
            then(texts)

    # EVAL, not EVALSHA: a pipeline cannot fall back when Redis lost its script cache.
    deferred("eval", _PUBLISH.source, len(keys), *keys, *args, then=delivered)


def _publish_call(
    session_id: uuid.UUID | str, frames: list[tuple[str, dict[str, Any]]], send: Fanout
) -> tuple[list[str], list[Any], list[str]]:
    """The script's keys and arguments, and the frames' bodies without their closing brace."""
    conf = agents_settings()
    bodies = [
        jsontext.dumps({"type": frame_type, **payload})[:-1] for frame_type, payload in frames
    ]
    keys = [
        redis_keys.frame_seq(session_id),
        redis_keys.frame_stream(session_id),
        redis_keys.listeners(session_id),
    ]
    args = [
        conf.FRAME_STREAM_MAXLEN,
        SEQ_TTL_SECONDS,
        conf.FRAME_RETENTION_SECONDS,
        send.origin,
        len(bodies),
        *bodies,
    ]
    return keys, args, bodies


def _delivered(result: list[Any], bodies: list[str], send: Fanout) -> list[str]:
    """The frames completed with their seqs as the script stored them, handed to the
    fan-out; their text."""
    first, others = int(result[0]), int(result[1])
    numbered = [
        (first + offset, f'{body},"seq":{first + offset}}}') for offset, body in enumerate(bodies)
    ]
    send(numbered, others > 0)
    return [text for _, text in numbered]


def frames_after(session_id: uuid.UUID | str, after_seq: int) -> list[tuple[int, str]]:
    """The stored frames with seq > after_seq, in order (as JSON text)."""
    entries = cast(
        list[Any], get_redis().xrange(redis_keys.frame_stream(session_id), min=f"{after_seq + 1}-0")
    )
    return [(int(entry_id.split(b"-")[0]), fields[b"f"].decode()) for entry_id, fields in entries]


def current_seq(session_id: uuid.UUID | str) -> int:
    value = get_redis().get(redis_keys.frame_seq(session_id))
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
        self.many([(frame_type, payload)])

    def many(self, frames: list[tuple[str, dict[str, Any]]], *, batched: bool = False) -> None:
        """Publish these frames, after any pending tokens, in one round trip: now, or
        `batched` with the rest of the open `write_batch()` (a turn's first and last
        frames ride with its lease's claim and release)."""
        self._send([*self._take_tokens(), *frames], batched=batched)

    def flush(self) -> None:
        self._send(self._take_tokens())

    def _take_tokens(self) -> list[tuple[str, dict[str, Any]]]:
        self._flushed_at = time.monotonic()
        if not self._pending:
            return []
        delta, self._pending = "".join(self._pending), []
        return [("token", {"delta": delta})]

    def _send(self, frames: list[tuple[str, dict[str, Any]]], *, batched: bool = False) -> None:
        if not frames:
            return
        stamped = [(frame_type, {**payload, **self.extra}) for frame_type, payload in frames]

        def to_local(texts: list[str]) -> None:
            if self.local is not None:
                for (frame_type, _), text in zip(frames, texts, strict=True):
                    self.local(frame_type, cast(dict, jsontext.loads(text)))

        if batched:
            publish_batched(self.session_id, stamped, self.fanout, then=to_local)
        else:
            to_local(_publish(self.session_id, stamped, self.fanout))
