"""Why a turn did not start: one set of errors that every transport renders its own way
(HTTP problems in agents.api.errors, websocket `error` frames, the CLI's messages).

What goes wrong while a turn runs is the engine's (agents.engine.turn.TURN_FAILURES)."""

from __future__ import annotations


class TurnRefused(Exception):
    """The turn did not start; nothing was written. `code` names why."""

    code = "refused"


class SessionNotFound(TurnRefused):
    """Missing, another tenant's, or a malformed id: one answer for all three."""

    code = "not_found"

    def __init__(self) -> None:
        super().__init__("No session with this id.")


class ContentInvalid(TurnRefused):
    code = "bad_message"


class KeyUsedForAnotherMessage(TurnRefused):
    code = "key_reused"


class KeyInProgress(TurnRefused):
    code = "in_progress"
