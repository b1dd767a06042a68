"""Server-sent events for a turn: the same event types as the websocket frames."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from django.db import close_old_connections
from rest_framework.renderers import BaseRenderer

Event = tuple[str, dict[str, Any]]
_END: Event = ("__end__", {})


class EventStreamRenderer(BaseRenderer):
    """Lets DRF's content negotiation accept `Accept: text/event-stream`."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, dict) and "user_message" in data:  # an idempotent replay
            return replay_events(data)
        return format_event("error", data if isinstance(data, dict) else {"detail": data})


def replay_events(result: dict[str, Any]) -> bytes:
    """A stored turn result as the events its stream ended with."""
    events = [format_event("message", {"message": result["user_message"]})]
    if result.get("assistant_message"):
        events.append(format_event("message", {"message": result["assistant_message"]}))
    if result.get("checkpoint"):
        events.append(format_event("checkpoint", {"checkpoint": {"id": result["checkpoint"]}}))
    return b"".join(events)


def format_event(event: str, payload: dict[str, Any], seq: int | None = None) -> bytes:
    body = {"type": event, **payload}
    if seq is not None:
        body["seq"] = seq
    data = json.dumps(body, separators=(",", ":"), default=str)
    return f"id: {body.get('seq', '')}\nevent: {event}\ndata: {data}\n\n".encode()


def stream_in_thread(
    run: Callable[[Callable[[str, dict[str, Any]], None]], None],
) -> AsyncIterator[bytes]:
    """Start `run(emit)` in a thread now, and return its events as SSE, as they come.

    The thread starts here, in the request's context (its tenant scope comes along), not
    when the response is first read; and the turn runs to the end even if the client goes
    away, so a dropped connection loses nothing that was accepted. The events are an async
    iterator: Django's ASGI handler reads a sync one to its end before sending anything,
    which held every token back until the turn was over.
    """
    events = EventChannel()

    def target() -> None:
        try:
            run(lambda event, payload: events.put((event, payload)))
        except Exception as error:  # reported to the client as an `error` event
            events.put(("error", {"code": type(error).__name__, "detail": str(error)}))
        finally:
            close_old_connections()
            events.put(_END)

    # The thread runs in a copy of this context: the request's tenant scope comes with it.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target,), daemon=True, name="sse-turn").start()
    return _as_events(events)


class EventChannel:
    """Events from the thread that makes them to the event loop that sends them, without a
    thread parked on a queue per stream: `put` wakes the reader's loop, which takes whatever
    piled up. The loop is known only once the response is read, after the first events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Event] = []
        self._wake: Callable[[], object] | None = None

    def put(self, event: Event) -> None:
        with self._lock:
            self._items.append(event)
            wake = self._wake
        if wake is not None:
            wake()

    async def batches(self) -> AsyncIterator[list[Event]]:
        loop, ready = asyncio.get_running_loop(), asyncio.Event()
        with self._lock:
            self._wake = partial(loop.call_soon_threadsafe, ready.set)
        while True:
            ready.clear()
            with self._lock:
                items, self._items = self._items, []
            if items:
                yield items
            else:
                await ready.wait()


async def _as_events(events: EventChannel) -> AsyncIterator[bytes]:
    async for batch in events.batches():
        chunk = b"".join(format_event(*event) for event in batch if event != _END)
        if chunk:  # frames carry the session's seq already
            yield chunk
        if _END in batch:
            return
