"""Django's HTTP handler for ASGI, with the middleware chain and the view in one thread hop.

Django's own ASGI handler builds the middleware chain in async mode. Our views are sync
(DRF), and so are some middleware, so every request used to cross between the event loop
and a worker thread several times: into the sync middleware, back out to the async ones
(messages, clickjacking), and in again for the view. Each crossing is a thread hand-off
that costs CPU while the GIL is contended, and REST throughput stopped growing with
concurrency. Here the whole chain runs sync, and a request enters its thread once.

The request still gets its own thread (Django's ThreadSensitiveContext around each request),
in which the `request_started`/`request_finished` receivers also run, so database
connections are opened and returned by the thread that used them.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import FileResponse, HttpRequest, HttpResponseBase


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def run_get_response(self, request: HttpRequest) -> HttpResponseBase:
        response: Any = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):  # as Django's: ASGI servers chunk files
            response.block_size = self.chunk_size
        return response
