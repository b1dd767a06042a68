"""Content negotiation: DRF's, with its answer to the common Accept headers given at once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

# DRF's answer to an absent Accept header (which it reads as this) or to this one exactly,
# when the first renderer's media type is a plain type/subtype (no wildcard, no parameters):
# that renderer matches first and is more specific, so it answers with its media type.
ANY = "*/*"


class FastContentNegotiation(DefaultContentNegotiation):
    """Every request negotiates its renderer, and for a client sending no Accept header or
    `*/*` DRF still parsed the header into media types and ranked them (~120 Python calls
    per request). The answer in that case is known without it; any other header, and any
    format override, goes through DRF's negotiation as before."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderers = renderers if isinstance(renderers, list) else list(renderers)  # views: lists
        first = _first_renderer_if_accepted(request, renderers, format_suffix)
        if first is not None:
            return first, str(first.media_type)
        result: tuple[BaseRenderer, str] = super().select_renderer(
            request, renderers, format_suffix
        )
        return result


def _first_renderer_if_accepted(
    request: Request, renderers: Sequence[BaseRenderer], format_suffix: str | None
) -> BaseRenderer | None:
    if not isinstance(request, Request) or not renderers or format_suffix:
        return None
    media_type: Any = renderers[0].media_type
    if not isinstance(media_type, str) or "*" in media_type or ";" in media_type:
        return None
    # The same header DRF reads (request.headers builds every header's name to find it).
    accept = request._request.META.get("HTTP_ACCEPT", ANY).strip()
    if accept != ANY and accept != media_type:  # the same renderer's own type: an exact match
        return None
    if request.query_params.get(FastContentNegotiation.settings.URL_FORMAT_OVERRIDE):
        return None
    return renderers[0]
