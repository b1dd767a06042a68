"""How a turn's refusals and failures read over HTTP: one problem per domain error, whose
type ends with the code the websocket's `error` frame carries for the same thing."""

from __future__ import annotations

from rest_framework.exceptions import APIException, NotFound, ValidationError

from agentplatform.http.idempotency import HEADER
from agentplatform.http.problems import BadGateway, Conflict, ServiceUnavailable
from agents.engine.concurrency import QueueTimeout
from agents.engine.turn import TurnFailed, failure_code
from agents.errors import (
    ContentInvalid,
    KeyInProgress,
    KeyUsedForAnotherMessage,
    SessionNotFound,
    TurnRefused,
)
from agents.services import StaleLease


def refusal_problem(error: TurnRefused) -> APIException:
    """Why the turn did not start."""
    if isinstance(error, SessionNotFound):
        return NotFound(str(error))
    if isinstance(error, ContentInvalid):
        return ValidationError({"content": [str(error)]})
    if isinstance(error, KeyUsedForAnotherMessage):
        return ValidationError({HEADER: [str(error)]})
    if isinstance(error, KeyInProgress):
        return Conflict(str(error))
    return ValidationError(str(error))


def failure_problem(error: Exception) -> APIException:
    """Why a turn that started did not complete (one of the engine's TURN_FAILURES)."""
    code = failure_code(error)
    if isinstance(error, QueueTimeout):
        return ServiceUnavailable(str(error), code=code)
    if isinstance(error, TurnFailed):
        detail = f"The LLM failed: {error}. The message was kept as seq {error.user_message.seq}."
        return BadGateway(detail, code=code)
    if isinstance(error, StaleLease):
        return Conflict("The session was taken over by another turn.", code=code)
    return Conflict(str(error), code=code)
