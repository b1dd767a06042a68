"""Django's HTTP handler for ASGI, with a request's sync work in one thread hop, on a pool.

Django's own ASGI handler builds the middleware chain in async mode, and our views are sync
(DRF), so every request crossed between the event loop and a worker thread several times:
`request_started`'s receivers, the sync middleware, back out to the async ones, in again
for the view, and `request_finished`'s receivers after the response. Each request also got
a thread of its own (Django's ThreadSensitiveContext), started and joined per request. Each
crossing is a hand-off that costs CPU while the GIL is contended, and REST throughput
stopped growing with concurrency.

Here the chain runs sync, and a request's whole sync part (signals, request, middleware,
view, and for a complete body its close) runs in one hop on a long-lived pool of threads,
so a thread's database connections are opened and returned by the thread that used them.
A streaming response (server-sent events) is sent from the event loop afterwards, watching
for the client going away as Django does.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import close_old_connections
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix


@cache
def _threads() -> ThreadPoolExecutor:
    # Bounded: a burst waits here for a thread instead of each request starting one; the
    # database pool (DB_POOL_MAX_SIZE) bounds how many can hold a connection anyway.
    return ThreadPoolExecutor(max_workers=settings.WEB_THREADS, thread_name_prefix="http")


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            respond = sync_to_async(self._respond, thread_sensitive=False, executor=_threads())
            response = await respond(scope, body_file)
            if response.streaming:
                await self._stream(response, receive, send)
            else:
                await self.send_response(response, send)
        finally:
            body_file.close()

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        """In a pool thread: what Django's handler does between the body and the send."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        response: Any = error_response if request is None else self.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):  # as Django's: ASGI servers chunk files
            response.block_size = self.chunk_size
        if response.streaming:
            # The stream is read on the event loop; this thread's connections are done.
            close_old_connections()
        else:
            response.close()  # request_finished: this thread's connections back to the pool
        return response

    async def _stream(self, response: Any, receive: Any, send: Any) -> None:
        """Send a streaming response until it ends or the client goes away, then close it."""
        sending = asyncio.create_task(self.send_response(response, send))
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait([sending, listening], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, sending):
                task.cancel()
            outcomes = await asyncio.gather(listening, sending, return_exceptions=True)
            await sync_to_async(response.close, thread_sensitive=False, executor=_threads())()
        for outcome in outcomes:  # a disconnect ends the stream; anything else is a bug
            if isinstance(outcome, Exception) and not isinstance(outcome, RequestAborted):
                raise outcome
