"""RFC 9457 problem details for every error the API can raise, 500 included.

Body: `type`, `title`, `status`, `detail`, and `errors` (a list of `{"pointer", "detail"}`)
for field errors. Content type: `application/problem+json`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from django import db
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from redis import exceptions as redis_exceptions
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from agentplatform.http.constraints import model_error_as_api_error

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "urn:agentplatform:problem:"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class BadGateway(exceptions.APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "The upstream service failed."
    default_code = "bad_gateway"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A backing service is unavailable; retry shortly."
    default_code = "service_unavailable"


_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}


def problem(
    status_code: int,
    detail: str,
    *,
    code: str | None = None,
    errors: list[dict[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"{TYPE_BASE}{code}" if code else "about:blank",
        "title": _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def problem_response(status_code: int, detail: str, **kwargs: Any) -> JsonResponse:
    """A problem response for code outside DRF (middleware, Django error handlers)."""
    return JsonResponse(
        problem(status_code, detail, **kwargs),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )


def _field_errors(detail: Any, pointer: str = "#") -> Iterator[dict[str, str]]:
    if isinstance(detail, dict):
        for field, value in detail.items():
            name = "" if field == "non_field_errors" else f"/{field}"
            yield from _field_errors(value, pointer + name)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            nested = isinstance(value, dict | list)
            yield from _field_errors(value, f"{pointer}/{index}" if nested else pointer)
    else:
        yield {"pointer": pointer, "detail": str(detail)}


def _from_api_exception(exc: exceptions.APIException, response: Response) -> Response:
    if isinstance(exc, exceptions.ValidationError):
        errors = list(_field_errors(exc.detail))
        body = problem(422, "The request has invalid fields.", code="validation", errors=errors)
        response.status_code = 422
    else:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        codes = exc.get_codes()
        body = problem(response.status_code, detail, code=codes if isinstance(codes, str) else None)
        wait = getattr(exc, "wait", None)
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            body["retry_after"] = int(wait)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


# A store that cannot be reached right now: the request did nothing, the client may retry.
STORE_DOWN: tuple[type[Exception], ...] = (
    db.OperationalError,
    db.InterfaceError,
    redis_exceptions.ConnectionError,
    redis_exceptions.TimeoutError,
    # A Redis Cluster in the middle of a failover: slots without a primary for a moment.
    redis_exceptions.ClusterDownError,
    redis_exceptions.TryAgainError,
    redis_exceptions.SlotNotCoveredError,
)
RETRY_AFTER_SECONDS = 5


def store_unavailable(exc: Exception) -> JsonResponse:
    """503 with Retry-After for a request that found PostgreSQL or Redis down."""
    redis_error = (redis_exceptions.RedisError, redis_exceptions.RedisClusterException)
    store = "redis" if isinstance(exc, redis_error) else "postgres"
    logger.warning("%s unavailable: %s", store, exc)
    response = problem_response(
        503,
        f"The {'Redis' if store == 'redis' else 'PostgreSQL'} store is unavailable; "
        "nothing was done. Retry shortly.",
        code=f"{store}_unavailable",
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's handler, with every answer reshaped as a problem document."""
    if isinstance(exc, STORE_DOWN):
        down = store_unavailable(exc)
        unavailable = Response(
            json.loads(down.content), status=503, content_type=PROBLEM_CONTENT_TYPE
        )
        unavailable["Retry-After"] = down["Retry-After"]
        return unavailable
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    exc = model_error_as_api_error(exc) or exc
    response = drf_exception_handler(exc, context)
    request = context.get("request")
    if request is not None:
        # Errors are always problem+json, even on a stream endpoint that negotiated SSE.
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = PROBLEM_CONTENT_TYPE
    if response is not None and isinstance(exc, exceptions.APIException):
        return _from_api_exception(exc, response)
    if response is not None:  # Http404 / PermissionDenied converted by DRF
        status_code = response.status_code
        detail = "Not found." if isinstance(exc, Http404) else "Permission denied."
        if isinstance(exc, DjangoPermissionDenied):
            detail = "Permission denied."
        response.data = problem(status_code, detail)
        response.content_type = PROBLEM_CONTENT_TYPE
        return response
    logger.exception("Unhandled error in %s", context.get("view"), exc_info=exc)
    return Response(
        problem(500, "An unexpected error occurred; it has been logged.", code="internal"),
        status=500,
        content_type=PROBLEM_CONTENT_TYPE,
    )


# Django-level handlers, for requests that never reach a DRF view (unknown paths).
def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return problem_response(404, "Not found.")


def handler500(request: HttpRequest) -> JsonResponse:
    return problem_response(
        500, "An unexpected error occurred; it has been logged.", code="internal"
    )


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return problem_response(400, "Bad request.")
