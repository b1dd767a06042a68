"""Namespaced settings of the agents app, with defaults in one place (DRF's api_settings).

Override any of them with `AGENTS = {...}` in settings; the environment feeds the defaults.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True)
class AgentsSettings:
    # Which LLM backend serves turns: "auto" (an OpenAI-compatible endpoint when one is
    # configured, else the bundled local model), "openai", "local" or "scripted" (tests).
    LLM_BACKEND: str = "auto"
    # Dotted path of the state backend (working memory, checkpoints, context sources): the
    # agents app drives turns, the memory app stores their state.
    STATE_BACKEND: str = "memory.state.PlatformState"
    # A turn lease lives this long unless renewed; a holder that died frees it after this.
    LEASE_SECONDS: float = 10.0
    # How long a queued or interrupting turn waits for the session before giving up (503).
    QUEUE_WAIT_SECONDS: float = 120.0
    # Tokens kept free for the reply when fitting the context into the agent's budget.
    REPLY_RESERVE_TOKENS: int = 256
    # Share of the budget kept for summaries and semantic memories (the rest, after the
    # system prompt and the reply reserve, is working memory's).
    CONTEXT_EXTRAS_SHARE: float = 0.25
    # Bodies of POST /invoke/ (stateless mode) may be this large.
    INVOKE_MAX_BODY_BYTES: int = 262_144
    # Bound on one message's content.
    MAX_MESSAGE_CHARS: int = 32_000
    # Frames of a session stay replayable (`resume`) at least this long, up to this many.
    FRAME_RETENTION_SECONDS: int = 900
    # 500 frames are ~80 turns: more than a reconnect needs (older history is in the
    # messages endpoint), and they bound Redis at ~80 KB per active session.
    FRAME_STREAM_MAXLEN: int = 500
    # Token deltas are sent in batches at most this far apart (one fan-out per batch).
    TOKEN_FLUSH_SECONDS: float = 0.03
    # Websockets: largest accepted frame, and messages allowed per connection per window.
    WS_MAX_FRAME_BYTES: int = 65_536
    WS_RATE_MESSAGES: int = 20
    WS_RATE_WINDOW_SECONDS: float = 10.0
    # Lifetime of a client token minted for a browser's websocket.
    CLIENT_TOKEN_SECONDS: int = 900
    # Dotted paths of the `agents.tools.Tool`s agents may call (each agent lists its own).
    TOOLS: tuple[str, ...] = ()
    # LLM calls one turn may make (tool use); the last one's text is the reply.
    MAX_LLM_CALLS: int = 8
    # Turns cut off mid-way (their last checkpoint is open and their lease expired) are
    # resumed by the recovery task at most this many times, within this window.
    RECOVERY_ATTEMPTS: int = 3
    RECOVERY_WINDOW_SECONDS: int = 3600


@functools.cache
def agents_settings() -> AgentsSettings:
    """Built once and kept (a turn reads them a dozen times); a test's override_settings
    of AGENTS clears it (below)."""
    overrides: dict[str, Any] = getattr(settings, "AGENTS", {})
    return AgentsSettings(**overrides)


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "AGENTS":
        agents_settings.cache_clear()
