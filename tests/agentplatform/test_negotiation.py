"""FastContentNegotiation answers as DRF's DefaultContentNegotiation does, for every
Accept header, renderer list and format override, including the ones it answers itself."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from agentplatform.http.negotiation import FastContentNegotiation, _first_renderer_if_accepted
from agents.api.sse import EventStreamRenderer


class AnyRenderer(BaseRenderer):
    media_type = "*/*"
    format = "any"


class JsonWithParams(JSONRenderer):
    media_type = "application/json; version=2"


RENDERER_LISTS = [
    [JSONRenderer()],
    [JSONRenderer(), EventStreamRenderer()],
    [EventStreamRenderer(), JSONRenderer()],
    [JSONRenderer(), BrowsableAPIRenderer()],
    [AnyRenderer(), JSONRenderer()],
    [JsonWithParams(), JSONRenderer()],
]
ACCEPTS = [
    None,
    "*/*",
    " */* ",
    "",
    "application/json",
    "Application/JSON",
    "application/json; indent=4",
    "text/event-stream",
    "text/html",
    "text/*",
    "*/*;q=0.5",
    "text/event-stream, */*",
    "application/xml",
]
QUERIES = ["", "format=json", "format=api", "format=xml"]


def _request(path: str, accept: str | None) -> Request:
    django_request = APIRequestFactory().get(path)
    if accept is not None:
        django_request.META["HTTP_ACCEPT"] = accept
    return Request(django_request)


def _outcome(negotiator: Any, request: Request, renderers: list[Any], suffix: str | None) -> Any:
    try:
        renderer, media_type = negotiator.select_renderer(request, renderers, suffix)
    except Exception as error:  # 406 and 404 are answers too
        return type(error)
    return renderer, media_type


@pytest.mark.parametrize("renderers", RENDERER_LISTS)
@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("suffix", [None, "json"])
def test_fast_negotiation_answers_as_drfs(
    renderers: list[Any], accept: str | None, query: str, suffix: str | None
) -> None:
    request = _request(f"/api/v1/agents/?{query}", accept)
    ours = _outcome(FastContentNegotiation(), request, renderers, suffix)
    drfs = _outcome(
        DefaultContentNegotiation(), _request(f"/api/v1/agents/?{query}", accept), renderers, suffix
    )
    assert ours == drfs


def test_an_empty_accept_header_is_still_not_acceptable() -> None:
    request = _request("/api/v1/agents/", "")
    with pytest.raises(NotAcceptable):
        FastContentNegotiation().select_renderer(request, [JSONRenderer()])


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_a_json_or_any_accept_is_answered_without_drfs_negotiation(accept: str | None) -> None:
    request = _request("/api/v1/agents/", accept)
    json = JSONRenderer()
    assert _first_renderer_if_accepted(request, [json, EventStreamRenderer()], None) is json
